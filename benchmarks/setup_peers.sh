#!/usr/bin/env bash
# Creates benchmarks/.venv-peers with the serving peers of bench_serving.py and bench_batching.py:
# NVIDIA PyTriton (bundles tritonserver; pins numpy<2) and MLServer (pins an old FastAPI), plus
# ONNX Runtime for both. They live in their own virtual environment so they never pin servekit's
# dependencies. Usage: bash benchmarks/setup_peers.sh [PYTHON]   (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-peers"
python="${1:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Bounded: a stalled download fails the setup instead of hanging it.
timeout 1200 "$venv/bin/python" -m pip install --quiet --default-timeout 60 \
  nvidia-pytriton mlserver onnxruntime
# One process per package: mlserver and tritonclient.grpc (imported by pytriton) register
# clashing "inference.*" protobuf symbols, so they can never share an interpreter.
for module in pytriton mlserver onnxruntime; do
  "$venv/bin/python" -c "import $module" 2>&1 | tail -n 1
done
"$venv/bin/python" - <<'PY'
import sysconfig
from importlib.metadata import version

for name in ("nvidia-pytriton", "mlserver", "onnxruntime", "numpy", "fastapi"):
    print(f"{name} {version(name)}")
print("tritonserver needs LD_LIBRARY_PATH=" + sysconfig.get_config_var("LIBDIR"))
PY
