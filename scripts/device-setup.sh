#!/bin/sh
# On the device machine, in the repository root: installs what scripts/device-prep.sh packed
# and was carried (either or both), builds the C fan-out, and says what it found. Idempotent.
#   .device/wheels       -> pip install --no-index --no-deps into the machine's python3
#   .device/janus.tar.xz -> /opt/hoinghi-janus (then: export HOINGHI_JANUS_ROOT=/opt/hoinghi-janus)
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ -d .device/wheels ]; then
  "$PY" -m pip install -q --no-index --no-deps .device/wheels/*.whl
fi
if [ -f .device/janus.tar.xz ] && [ ! -x /opt/hoinghi-janus/bin/janus ]; then
  mkdir -p /opt
  tar -xJf .device/janus.tar.xz -C /opt
  rm -rf /opt/hoinghi-janus
  mv /opt/janus-root /opt/hoinghi-janus
fi
# The C fan-out for this Python (falls back to the Python path if it cannot be built).
"$PY" sfu/fastpath/_build.py || echo "C fan-out not built: the Python path will run" >&2
"$PY" -c "import aiortc, sfu.fastpath as f; print('aiortc', aiortc.__version__, 'fastpath', f.AVAILABLE)"
if [ -x /opt/hoinghi-janus/bin/janus ]; then
  LD_LIBRARY_PATH=/opt/hoinghi-janus/lib /opt/hoinghi-janus/bin/janus --version | head -1
fi
nproc
