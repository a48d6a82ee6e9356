#!/usr/bin/env bash
# Installs the Debian packages the tests need, only where they are missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v janus >/dev/null 2>&1 || need+=(janus)  # the peer SFU in bench tests
command -v gcc >/dev/null 2>&1 || need+=(gcc)  # compiles the loopback shim Janus needs
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
