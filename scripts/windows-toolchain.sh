#!/usr/bin/env bash
# What building and testing the Windows client from Linux needs, installed when
# missing (idempotent; quick when everything is there):
#   - the Rust target x86_64-pc-windows-gnu (rustup);
#   - Debian's gcc-mingw-w64-x86-64: the linker, and the C compiler for the crypto
#     crate's build script. Nothing else: neither cmake nor nasm is needed for this
#     target, with ring or with aws-lc-rs (aws-lc-sys 0.47 builds it with its cc
#     builder and pregenerated bindings, and rustls's aws_lc_rs feature turns on
#     aws-lc-rs's prebuilt NASM objects; checked by building aws-lc-sys for this
#     target with cmake and nasm hidden from PATH);
#   - with --wine, Debian's wine64, which runs tunnel.exe in the end-to-end tests.
#
#   scripts/windows-toolchain.sh          # for cargo build/clippy --target x86_64-pc-windows-gnu
#   scripts/windows-toolchain.sh --wine   # and Wine, for the tests
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

target=x86_64-pc-windows-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "scripts/windows-toolchain.sh: rustup target add $target" >&2
    rustup target add "$target" >&2
fi

missing=()
have x86_64-w64-mingw32-gcc || missing+=(gcc-mingw-w64-x86-64)
if [ "${1:-}" = "--wine" ]; then
    { have wine || have wine64 || [ -x /usr/lib/wine/wine64 ]; } || missing+=(wine64)
fi
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if have sudo; then sudo=(sudo); else
            echo "scripts/windows-toolchain.sh: missing ${missing[*]}; run as root or install them" >&2
            exit 1
        fi
    fi
    if ! have apt-get; then
        echo "scripts/windows-toolchain.sh: missing ${missing[*]}; install them (no apt-get here)" >&2
        exit 1
    fi
    echo "scripts/windows-toolchain.sh: installing ${missing[*]}" >&2
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
    "${apt[@]}" update -qq >&2
    "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
