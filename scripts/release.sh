#!/usr/bin/env bash
# Release builds of `tunnel` for every target this machine can build, from one
# command (README: "Linux, macOS and Windows"):
#   x86_64-unknown-linux-gnu   target/x86_64-unknown-linux-gnu/release/tunnel
#   x86_64-pc-windows-gnu      target/x86_64-pc-windows-gnu/release/tunnel.exe
#   aarch64-apple-darwin       only with SDKROOT naming a macOS SDK (and a Mach-O
#                              linker, e.g. osxcross): the crypto crate's C code
#                              includes Apple's SDK headers (TargetConditionals.h,
#                              libc), which Linux does not have.
# Extra arguments go to every `cargo build`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=(x86_64-unknown-linux-gnu x86_64-pc-windows-gnu)
if [ -n "${SDKROOT:-}" ] && [ -d "${SDKROOT}" ]; then
    targets+=(aarch64-apple-darwin)
else
    echo "scripts/release.sh: skipping aarch64-apple-darwin (no SDKROOT: build it on a Mac with cargo install --path .)" >&2
fi
bash scripts/windows-toolchain.sh
for t in "${targets[@]}"; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
    cargo build --release --locked --target "$t" --bin tunnel "$@"
done
dir=${CARGO_TARGET_DIR:-target}
for t in "${targets[@]}"; do
    ls -l "$dir/$t/release/tunnel" "$dir/$t/release/tunnel.exe" 2>/dev/null || true
done
