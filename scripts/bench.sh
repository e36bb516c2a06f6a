#!/usr/bin/env bash
# The project's bench command: the end-to-end benchmark of the real binary against
# raw loopback TCP and the relay limit, side by side in one run. Prints the tables,
# writes target/bench/results.json, then draws docs/bench.svg from it with
# scripts/bench_chart.py (matplotlib in a venv at target/bench-venv, made on first
# use; the chart is skipped with a message when python3, venv or pip fail).
# Knobs (env): BENCH_BYTES, BENCH_RTT, BENCH_SETUP, BENCH_IDLE (list, "1000,10000"),
# BENCH_ROUNDS (report medians), BENCH_PEERS=1 (see scripts/bench-peers.sh),
# BENCH_WAN_SECS, BENCH_WAN_LINK=tun, BENCH_WAN_NETEM=off, BENCH_WAN_CC, BENCH_WAN=off,
# BENCH_ONLY=wan (only the WAN section, to target/bench/wan.json, no chart),
# BENCH_ONLY=small (small messages through a real redis-server, installed when
# missing; target/bench/small.json), BENCH_ONLY=login_flood, BENCH_ONLY=up_idle.
# Arguments go to cargo bench (so bench arguments follow `--`, e.g.
# `scripts/bench.sh -- --peers`). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ${BENCH_ONLY:-} == small ]] && ! command -v redis-benchmark >/dev/null; then
    echo "bench: installing redis-server (redis-benchmark) for the small-message figure"
    sudo=(); [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools
fi
cargo bench --bench e2e "$@"
if [[ -n ${BENCH_ONLY:-} ]]; then
    exit 0
fi

venv=target/bench-venv
chart() {
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        echo "chart: making $venv with matplotlib"
        python3 -m venv "$venv" || return 1
        "$venv/bin/pip" install --quiet --disable-pip-version-check matplotlib || return 1
    fi
    "$venv/bin/python" scripts/bench_chart.py target/bench/results.json docs/bench.svg
}
if ! command -v python3 >/dev/null; then
    echo "chart: skipped (no python3)"
elif ! chart; then
    echo "chart: skipped (python3 venv, pip or matplotlib failed; see above)"
fi
