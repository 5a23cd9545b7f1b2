#!/usr/bin/env bash
# Installs the Debian packages the build needs. Every build: cmake and nasm, with which
# turbojpeg-sys builds libjpeg-turbo 3 (JPEG decoding, reduced in the DCT domain) from its
# bundled sources, SIMD included. `cargo build --features video` also: ffmpeg-sys-next links the
# system's libavcodec/libavformat/libavutil/libswscale (FFmpeg 5.1 on Debian 12) through
# pkg-config and generates its bindings with bindgen, which loads libclang. The browser tests
# (tests/browser.rs) drive Debian's Chromium headless; the TLS tests (tests/tls.rs) make their
# certificates with the openssl command; the fleet tests (tests/fleet.rs) start a throwaway
# PostgreSQL server from Debian's postgresql package (scripts/pg-test.sh). Idempotent: does nothing when everything
# is already there.
set -euo pipefail

packages=(
    cmake
    nasm
    pkg-config
    libclang-dev
    libavcodec-dev
    libavformat-dev
    libavutil-dev
    libavfilter-dev
    libavdevice-dev
    libswscale-dev
    libswresample-dev
    chromium
    openssl
    postgresql
)

have_libclang() {
    # bindgen (clang-sys) finds libclang.so through ldconfig or the usual LLVM folders.
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null && return 0
    compgen -G '/usr/lib/x86_64-linux-gnu/libclang*.so*' >/dev/null && return 0
    compgen -G '/usr/lib/aarch64-linux-gnu/libclang*.so*' >/dev/null && return 0
    return 1
}

if command -v cmake >/dev/null 2>&1 && command -v nasm >/dev/null 2>&1 \
    && command -v pkg-config >/dev/null 2>&1 \
    && pkg-config --exists libavcodec libavformat libavutil libswscale \
    && have_libclang && command -v chromium >/dev/null 2>&1 \
    && command -v openssl >/dev/null 2>&1 \
    && compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    echo "setup-system: cmake, nasm, libav* $(pkg-config --modversion libavcodec), libclang, chromium, openssl and postgresql already present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-system: apt-get not found; install by hand: ${packages[*]}" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "setup-system: not root and sudo is missing; as root run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
fi

"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${packages[@]}"
echo "setup-system: installed libav* $(pkg-config --modversion libavcodec)"
