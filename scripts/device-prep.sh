#!/bin/sh
# Packs what the device machine (no package registry, Python 3.12) needs for the benchmarks,
# into .device/ (gitignored), to be named in the device tool's `carry`:
#   .device/wheels       cp312 wheels of the runtime dependencies (~45 MB)
#   .device/janus.tar.xz Janus (this machine's Debian build): bin/janus, the VideoRoom plugin,
#                        the HTTP transport and every library they load but glibc's (~18 MB)
# Both together are near the tool's 64 MiB: carry them in separate calls (bench/DEVICE.md).
# Usage: scripts/device-prep.sh [wheels] [janus]   (both by default)
set -eu
cd "$(dirname "$0")/.."
what="${*:-wheels janus}"
mkdir -p .device
PY=${PY:-.venv/bin/python}

for part in $what; do
  case "$part" in
  wheels)
    rm -rf .device/wheels
    # The runtime dependencies of pyproject.toml but numpy and matplotlib (the device's
    # Python has them), for CPython 3.12 on manylinux x86-64.
    "$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
      --abi cp312 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 -d .device/wheels \
      "aiortc==1.16.0" "aioice==0.13.*" "pylibsrtp>=0.10,<2" "av>=14,<20" \
      "starlette>=0.40,<2" "uvicorn>=0.30,<1" "websockets>=13,<18" "PyJWT>=2.8,<3" \
      "rich>=13,<16" "prometheus-client>=0.20,<1" "cffi>=1.15,<3" "httpx>=0.27,<1"
    du -sh .device/wheels
    ;;
  janus)
    command -v janus >/dev/null || { echo "janus is not installed here (apt-get install -y janus)" >&2; exit 1; }
    libdir=$(dirname "$(find /usr/lib -path '*/janus/plugins/libjanus_videoroom.so' | head -1)")/..
    tmp=$(mktemp -d)
    root=$tmp/janus-root
    mkdir -p "$root/bin" "$root/lib" "$root/janus/plugins" "$root/janus/transports"
    cp "$(command -v janus)" "$root/bin/"
    cp "$libdir/plugins/libjanus_videoroom.so" "$root/janus/plugins/"
    cp "$libdir/transports/libjanus_http.so" "$root/janus/transports/"
    # Every library they load, but the C runtime's (the device's glibc is newer and must stay).
    ldd "$root/bin/janus" "$root"/janus/*/*.so | awk '/=>/ {print $3}' | sort -u |
      grep -Ev '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' |
      while read -r lib; do cp -L "$lib" "$root/lib/"; done
    tar -cJf .device/janus.tar.xz -C "$tmp" janus-root
    rm -rf "$tmp"
    ls -la .device/janus.tar.xz
    ;;
  *) echo "unknown part $part (wheels, janus)" >&2; exit 2 ;;
  esac
done
