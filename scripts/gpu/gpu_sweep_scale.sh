#!/usr/bin/env bash
# The same grid on N GPUs at once (Hydra's joblib launcher, +launcher=parallel), wall time and GPU minutes:
#   bash scripts/gpu/gpu_sweep_scale.sh N_GPUS       (device tool: nvidia-h100-x2 for 2, nvidia-h100-x4 for 4)
# N_GPUS=1 runs the grid serially (Hydra's basic launcher), as a sweep runs without a launcher preset.
# Each point: one server, spec.num_steps x spec.topk of SWEEP_GRID (default the 16-point grid
# spec.num_steps=1,3,5,7 spec.topk=1,2,4,8), greedy, batch 1 and 8, and one shared no-speculation
# baseline. Cheap by default so a grid fits one call: the tiny pair (SWEEP_SHAPE=llama-3.1-8b for
# the 8B-shaped one), CUDA graphs off, few prompts (SWEEP_PROMPTS=8, SWEEP_TOKENS=64). With those,
# a point's cost is mostly SGLang's start, the part a parallel sweep spreads over the GPUs.
# Needs joblib and hydra-joblib-launcher: installed from .whl/ into /tmp/site when missing.
# SWEEP_TIMEOUT_S (540) bounds the sweep; finished points are kept (the same command resumes, but
# then the wall time is no longer the grid's). Results: $OUT/sweep-scale-N/ (./sweep-scale-out without $OUT).
# SWEEP_PAIRS (/tmp): where the pair is built; SWEEP_DIR (sweeps): where the sweep directory goes (removed first).
# SWEEP_DRY=1: the fake server and tests/fakes/bin/nvidia-smi on a CPU machine (checks this script only).
set -uo pipefail
cd "$(dirname "$0")/../.."
N=${1:?usage: gpu_sweep_scale.sh N_GPUS}
RES=${OUT:-$PWD/sweep-scale-out}/sweep-scale-$N
mkdir -p "$RES"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} TORCH_SYMM_MEM_DISABLE_MULTICAST=${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1}
export NVSHMEM_DISABLE_NVLS=${NVSHMEM_DISABLE_NVLS:-1} PYTHONUNBUFFERED=1
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
if [ "$N" -gt 1 ] && ! python3 -c "import hydra_plugins.hydra_joblib_launcher, joblib" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "[sweep_scale] no .whl/*.whl to install joblib and hydra-joblib-launcher from"; exit 2; }
  mkdir -p /tmp/site && python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
SHAPE=${SWEEP_SHAPE:-tiny}
SG=(sglang=triton sglang.disable_cuda_graph=true sglang.ready_timeout_s=300)
DEVICE=cuda
if [ -n "${SWEEP_DRY:-}" ]; then
  SHAPE=tiny DEVICE=cpu
  export PATH=$PWD/tests/fakes/bin:$PATH FAKE_NVIDIA_SMI_GPUS=$N FAKE_SGLANG_RECORD=$RES/fake-servers.jsonl
  export FAKE_NVIDIA_SMI_RECORD=$RES/fake-servers.jsonl AUTOMODEL_SPEC_LOCK_DIR=$RES/leases FAKE_SGLANG_BOOT_S=${FAKE_SGLANG_BOOT_S:-1}
  SG=(sglang.python=$PWD/tests/fakes/fake_sglang.py sglang.stop_timeout_s=4)
fi
nvidia-smi --query-gpu=index,name --format=csv,noheader | tee "$RES/gpus.txt"
PAIR=${SWEEP_PAIRS:-/tmp}/sweep-scale-$SHAPE
VOCAB=$([ "$SHAPE" = tiny ] && echo 256 || echo 32000)
python3 scripts/gpu/build_bench_pair.py --out "$PAIR" --shape "$SHAPE" --device "$DEVICE" --draft-vocab "$VOCAB" \
  > "$RES/build.log" 2>&1 || { tail -5 "$RES/build.log"; exit 1; }
# SWEEP_POOL: which GPUs (e.g. "[2,3]"), so sweeps of different sizes can share a host at once
POOL=${SWEEP_POOL:-$(python3 -c "print('[' + ','.join(map(str, range($N))) + ']')")}
LAUNCH=()
[ "$N" -gt 1 ] && LAUNCH=(+launcher=parallel "hydra.launcher.n_jobs=$N")
# shellcheck disable=SC2206  # SWEEP_GRID holds several overrides
GRID=(${SWEEP_GRID:-spec.num_steps=1,3,5,7 spec.topk=1,2,4,8})
NAME=scale-$N
DIR=${SWEEP_DIR:-sweeps}/$NAME
rm -rf "$DIR"
T0=$(date +%s.%N)
timeout "${SWEEP_TIMEOUT_S:-540}" python3 recipes/serve.py -m +sweep=grid "${LAUNCH[@]}" bench.name="$NAME" \
  hydra.sweep.dir="$DIR" draft=trained draft.path="$PAIR/run" target.path="$PAIR/target" "${SG[@]}" "bench.gpu_pool=$POOL" \
  'bench.concurrency=[1,8]' bench.num_prompts=${SWEEP_PROMPTS:-8} bench.max_new_tokens=${SWEEP_TOKENS:-64} \
  "${GRID[@]}" > "$RES/sweep.log" 2>&1
RC=$?
T1=$(date +%s.%N)
cp "$DIR"/summary.* "$DIR"/best_override.txt "$RES"/ 2>/dev/null
tar -czf "$RES/sweep.tar.gz" -C "$(dirname "$DIR")" "$NAME" 2>/dev/null
python3 - "$N" "$T0" "$T1" "$RC" "$DIR" <<'PY' | tee "$RES/result.md"
import json, sys
from pathlib import Path
n, t0, t1, rc, root = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
points = [json.loads(p.read_text()) for p in root.glob("*/metrics.json")]
bases = [json.loads(p.read_text()) for p in root.glob("baseline/*/metrics.json")]
ok = [m for m in points if m.get("status") == "ok"]
server_s = sum(m.get("gpu_seconds") or 0 for m in points + bases)
wall = t1 - t0
best = (root / "best_override.txt").read_text().strip() if (root / "best_override.txt").exists() else "none"
print("| GPUs | exit | points ok / run | wall s | GPU minutes held (wall x GPUs) | server GPU minutes |")
print("|---:|---:|---:|---:|---:|---:|")
print(f"| {n} | {rc} | {len(ok)} / {len(points)} | {wall:.0f} | {wall * n / 60:.1f} | {server_s / 60:.1f} |")
print(f"\nbest:\n{best}")
PY
exit $RC
