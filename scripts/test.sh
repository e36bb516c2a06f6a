#!/usr/bin/env bash
# The project's one test command: install what the end-to-end tests need (when it is
# missing), then run `cargo test` (unit and end-to-end tests). Extra arguments go
# to `cargo test`.
#
#   scripts/test.sh                  # everything
#   scripts/test.sh --test e2e ssh   # one module of the e2e binary
#
# The tests drive real programs: OpenSSH (sshd, ssh, scp, ssh-keygen), PostgreSQL
# (initdb, pg_ctl, postgres, psql, pgbench; run as the `postgres` user via runuser
# when we are root), `kill` (procps), Chromium with chromedriver, curl, openssl,
# python3, and Prometheus (promtool and the server, for the metrics tests). On
# Debian/Ubuntu they are installed with
# apt-get; `apt-get update` runs at most once, and only when something is missing.
# For the Windows client: the x86_64-pc-windows-gnu target, mingw-w64 and Wine
# (scripts/windows-toolchain.sh); tunnel.exe is cross-built before the tests run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()

have() { command -v "$1" >/dev/null 2>&1; }

# Newest PostgreSQL server bin dir (Debian keeps them out of PATH).
pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ]; then
        echo "$d"
    elif have pg_config; then
        pg_config --bindir
    fi
}

pg_complete() {
    local d
    d=$(pg_bindir)
    [ -n "$d" ] || return 1
    for tool in initdb pg_ctl postgres psql pgbench; do
        [ -x "$d/$tool" ] || return 1
    done
}

[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
{ have ssh && have scp && have ssh-keygen; } || missing+=(openssh-client)
# `postgresql` is Debian's metapackage for the supported major version; it brings
# postgresql-NN (initdb, pg_ctl, postgres, pgbench) and postgresql-client-NN (psql).
pg_complete || missing+=(postgresql)
have kill || missing+=(procps)
have runuser || missing+=(util-linux)
# The real-browser login test drives Debian's Chromium through chromedriver (W3C
# WebDriver) from tests/fixtures/chromium_hook.py; curl is what `tunnel curl` runs.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
have curl || missing+=(curl)
# The metrics tests check the exposition with promtool and scrape it with a real
# Prometheus server (both in Debian's prometheus package).
{ have promtool && have prometheus; } || missing+=(prometheus)
# The README's "TLS for the edge" commands run in a test.
have openssl || missing+=(openssl)
have python3 || missing+=(python3)
# The resume tests kill the client's WebSocket with `ss -K` (needs root).
have ss || missing+=(iproute2)
# One resume test black-holes the edge's port with an `nft` table of its own.
have nft || missing+=(nftables)

if [ ${#missing[@]} -gt 0 ]; then
    if ! have apt-get; then
        echo "scripts/test.sh: missing ${missing[*]}; install them (no apt-get here)" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if have sudo; then sudo=(sudo); else
            echo "scripts/test.sh: missing ${missing[*]}; run as root or install them" >&2
            exit 1
        fi
    fi
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    # Installing a daemon must not start it (a CI container has no init): unless the
    # machine already has a policy, deny service starts for the length of the install.
    own_policy=false
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        own_policy=true
        trap '"${sudo[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
    fi
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
    "${apt[@]}" update -qq >&2
    "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
    if $own_policy; then
        "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    pg_complete || { echo "scripts/test.sh: PostgreSQL tools still missing" >&2; exit 1; }
    [ -x /usr/sbin/sshd ] || { echo "scripts/test.sh: /usr/sbin/sshd still missing" >&2; exit 1; }
fi

# The tests find the PostgreSQL tools here (see tests/support/postgres.rs).
PG_BINDIR=${PG_BINDIR:-$(pg_bindir)}
export PG_BINDIR

# The Windows client, cross-built and run under Wine by tests/windows.rs (which
# fails under CI=true when TUNNEL_WINDOWS_EXE is missing).
# The library's unit tests are cross-built too, and run under Wine by the same
# module (their path comes from cargo's JSON report, in TUNNEL_WINDOWS_LIB_TESTS).
bash scripts/windows-toolchain.sh --wine
cargo build --target x86_64-pc-windows-gnu --bin tunnel
TUNNEL_WINDOWS_EXE=${TUNNEL_WINDOWS_EXE:-${CARGO_TARGET_DIR:-$PWD/target}/x86_64-pc-windows-gnu/debug/tunnel.exe}
TUNNEL_WINDOWS_LIB_TESTS=$(cargo test --target x86_64-pc-windows-gnu --lib --no-run \
    --message-format=json-render-diagnostics | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
export TUNNEL_WINDOWS_EXE TUNNEL_WINDOWS_LIB_TESTS

# --lib --bins --tests: no doc-test run (there are none), so the run closes on the
# end-to-end summary rather than on an empty doc-test line.
exec cargo test --lib --bins --tests "$@"
