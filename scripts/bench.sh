#!/usr/bin/env bash
# The project's bench command: the end-to-end benchmark of the real binary against
# raw loopback TCP and the relay limit, side by side in one run. Prints one table and
# writes target/bench/results.json. Knobs (env): BENCH_BYTES, BENCH_RTT, BENCH_SETUP,
# BENCH_IDLE, BENCH_ROUNDS (report medians). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo bench --bench e2e "$@"
