#!/usr/bin/env bash
# Serve the producers' own drafts on the 8B-shaped synthetic pair (tests/gpu/test_producers_gpu.py).
#   bash scripts/gpu/gpu_producers.sh [pytest args]
# On the project's offline GPU machine: SGLang from the .sgl bundle (shared/device/README.md), the
# producers' code from wheels in .whl/ (nemo-automodel 0.7.0, speculators 0.9.0 and what they import
# that the machine lacks: see docs/gpu-runs.md), installed beside the bundle without dependencies.
# Results: $OUT/producers_gpu.json, theirs_8b.json, the console log and the servers' log tails.
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /tmp/site
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
# shellcheck source=scripts/gpu/_producer_wheels.sh
source scripts/gpu/_producer_wheels.sh && PRODUCERS=$(install_producer_wheels)
# the bundle's versions first: the wheels only add what it lacks
export PYTHONPATH=/tmp/site:$PRODUCERS:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
RESULTS=${OUT:-/tmp/automodel_spec_gpu_results}
export OUT=/tmp/automodel_spec_gpu
mkdir -p "$RESULTS" "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, sglang; print('torch', torch.__version__, '| sglang', sglang.__version__)"
# -o addopts=: in this one process (not the CPU suite's pytest-xdist workers, which this machine may lack)
timeout "${PRODUCERS_TIMEOUT_S:-560}" python3 -m pytest -o addopts= -m gpu tests/gpu/test_producers_gpu.py -v -s \
  -p no:cacheprovider "$@" 2>&1 | tee "$RESULTS/console.txt"
rc=${PIPESTATUS[0]}
cp "$OUT"/producers_gpu.json "$OUT"/theirs_8b.json "$OUT"/fp32_8b.json "$RESULTS"/ 2>/dev/null
for log in "$OUT"/*/server.log "$OUT"/*/*/server.log; do
  [ -f "$log" ] && { echo "== $log"; tail -n 40 "$log"; } >> "$RESULTS/server-log-tails.txt"
done
exit "$rc"
