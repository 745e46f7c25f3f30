#!/usr/bin/env bash
# Run the GPU test suite on a machine with a CUDA GPU and SGLang.
#   bash scripts/gpu/gpu_suite.sh [test paths and pytest options; default: tests/gpu]
# On the project's GPU machine (no network), SGLang comes from the bundle that
# ../shared/device/sglang-bundle.sh builds into .sgl/ (carried with the working tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
# Hydra's joblib launcher for the parallel-sweep case, from wheels in .whl/ when the machine lacks it
if compgen -G ".whl/hydra_joblib_launcher-*.whl" >/dev/null && ! python3 -c "import hydra_plugins.hydra_joblib_launcher" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/joblib-site .whl/joblib-*.whl .whl/hydra_joblib_launcher-*.whl
  export PYTHONPATH=/tmp/joblib-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}   # the project, without an install (the GPU machine is offline)
export PYTHONUNBUFFERED=1
python3 - <<'PY'
import torch, sglang
print("torch", torch.__version__, "| sglang", sglang.__version__, "|",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
PY
# the paths and options given, else the whole suite; in this one process, one test at a time (the CPU
# suite's addopts spread it over pytest-xdist workers; the GPU is one, and this machine may lack xdist)
exec python3 -m pytest -o addopts= -m gpu -v -s -p no:cacheprovider "${@:-tests/gpu}"
