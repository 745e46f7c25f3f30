#!/usr/bin/env bash
# Benchmark sweep on a GPU machine, sized for one 10-minute call and resumable across calls.
#   bash scripts/gpu/gpu_bench.sh NAME [serve.py overrides...]
# e.g. bash scripts/gpu/gpu_bench.sh h100 spec.num_steps=1,3,5,7 spec.topk=1 'bench.temperature=[0,5]'
# Builds the synthetic Llama-3.1-8B-shaped pair once (BENCH_PAIR, default /tmp/bench8b; build flags
# in BENCH_PAIR_ARGS, e.g. BENCH_PAIR=/tmp/spread8b BENCH_PAIR_ARGS="--spread 4" for trees), or takes the
# real pair widened to those shapes where BENCH_PAIR holds one (its widen.json; gpu_real_pair.sh widen), then runs
#   recipes/serve.py -m +sweep=grid bench.name=NAME sglang=triton_bench ...   (sweeps/NAME)
# (BENCH_SWEEP=predict runs +sweep=predict instead of the grid.)
# Finished points are skipped, so the same command continues a sweep. BENCH_TIMEOUT_S (default
# 540) bounds this script up to the end of the sweep, the pair's build included, so that the
# results are packed before a 10-minute call ends; a point cut off is measured again next call.
# Between device machines (each starts bare), what can be reused travels through $OUT and back in
# through .bench/ (carried): the sweep directory (finished points, the baseline) and the
# compiled-kernel caches written during the run (Triton, FlashInfer, TorchInductor, CUDA's). A
# server start spends ~40 s per new shape compiling in CUDA-graph capture (~80 s for the first
# start of a fresh machine); on 2026-11-27 a fresh machine given these caches still compiled for
# 40 s (docs/benchmarks.md), so they save less than hoped -- for the price of one ~10 MB file.
set -uo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:?usage: gpu_bench.sh NAME [overrides...]}; shift
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
# files newer than this (restored ones too: -m) are carried back; BENCH_CACHE_MARK names an older
# marker file when a call runs other servers first and their caches should travel too
MARK=${BENCH_CACHE_MARK:-$(mktemp)} && sleep 1
if [ -f .bench/kernel-caches.tar.gz ]; then
  tar -xmzf .bench/kernel-caches.tar.gz -C / && echo "[gpu_bench] kernel caches restored"
fi
if [ -f ".bench/sweep-$NAME.tar.gz" ] && [ ! -d "sweeps/$NAME" ]; then
  mkdir -p sweeps && tar -xzf ".bench/sweep-$NAME.tar.gz" -C sweeps && echo "[gpu_bench] sweeps/$NAME restored"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>/dev/null
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>/dev/null \
  | sed 's/^/[gpu_bench] already on the GPU: /'
PAIR=${BENCH_PAIR:-/tmp/bench8b}
DRAFT=$PAIR/run
if [ -f "$PAIR/widen.json" ]; then  # the real pair widened (gpu_real_pair.sh widen): trained, not built here
  DRAFT=$PAIR/draft && echo "[gpu_bench] the widened real pair in $PAIR"
else
  # shellcheck disable=SC2086  # BENCH_PAIR_ARGS holds several flags, e.g. "--spread 4"
  python3 scripts/gpu/build_bench_pair.py --out "$PAIR" --shape llama-3.1-8b --device cuda ${BENCH_PAIR_ARGS:-} || exit 1
fi
LEFT=$(( ${BENCH_TIMEOUT_S:-540} - SECONDS ))
[ "$LEFT" -gt 0 ] || { echo "[gpu_bench] no time left for the sweep (BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-540})"; LEFT=1; }
timeout "$LEFT" python3 recipes/serve.py -m +sweep="${BENCH_SWEEP:-grid}" bench.name="$NAME" \
  draft=trained draft.path="$DRAFT" target.path="$PAIR/target" sglang=triton_bench "$@"
rc=$?
python3 -m automodel_spec.sweep "sweeps/$NAME" >/dev/null 2>&1 || true
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/$NAME"
  cp sweeps/"$NAME"/summary.* sweeps/"$NAME"/best_override.txt sweeps/"$NAME"/predictions.json "$OUT/$NAME"/ 2>/dev/null
  tar -czf "$OUT/sweep-$NAME.tar.gz" -C sweeps "$NAME"
  find "$HOME/.triton" "$HOME/.cache" "$HOME/.nv" /tmp/torchinductor_* -type f -newer "$MARK" -size -16M \
    ! -path '*/automodel_spec/*' 2>/dev/null | sed 's|^/||' > /tmp/gpu_bench.caches
  [ -s /tmp/gpu_bench.caches ] && tar -czf "$OUT/kernel-caches.tar.gz" -C / -T /tmp/gpu_bench.caches
fi
cat "sweeps/$NAME/summary.md" 2>/dev/null
exit $rc
