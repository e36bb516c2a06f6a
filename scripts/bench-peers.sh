#!/usr/bin/env bash
# The bench with peers: other clients measured on the same paths in the same run
# (websocat over ws://; wstunnel over ws:// and wss://; stock `cloudflared access
# tcp` against our own `tunnel edge` over wss://), each skipped with one line when
# it is not on PATH. target/peers/bin goes first on PATH. cloudflared is never
# built here: put a release binary on PATH to have it measured.
#
#   scripts/bench-peers.sh [--install] [cargo bench args...]
#
# --install first puts the peers into target/peers with `cargo install --locked -j1`:
# websocat, and wstunnel from crates.io as `wstunnel-cli` (or `wstunnel`, its older
# name) or, when WSTUNNEL_SRC names a source checkout, from there. wstunnel is built
# with ring instead of aws-lc (no cmake needed). Compiling them takes a while.
# Other knobs as for scripts/bench.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=target/peers

install_peers() {
    local features=(--no-default-features --features ring)
    cargo install --locked -j1 --root "$root" websocat ||
        echo "websocat: install failed (see above); the bench skips it"
    if [[ -n ${WSTUNNEL_SRC:-} ]]; then
        # Its own .cargo/config.toml (rustflags) applies only from inside the checkout.
        (cd "$WSTUNNEL_SRC" && cargo install --locked -j1 --root "$OLDPWD/$root" \
            --path wstunnel-cli "${features[@]}")
    elif ! cargo install --locked -j1 --root "$root" wstunnel-cli "${features[@]}" &&
        ! cargo install --locked -j1 --root "$root" wstunnel "${features[@]}"; then
        echo "wstunnel: not installable from the registry here (tried wstunnel-cli, wstunnel);"
        echo "  set WSTUNNEL_SRC to a checkout of its source, or put it on PATH; the bench skips it"
    fi
}

if [[ ${1:-} == --install ]]; then
    shift
    install_peers
fi
export PATH="$PWD/$root/bin:$PATH"
export BENCH_PEERS=1
exec scripts/bench.sh "$@"
