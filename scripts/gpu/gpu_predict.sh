#!/usr/bin/env bash
# The predict sweep on one GPU, with exactly the workload of the recorded 16-point grids
# (docs/data/2026-11-27-h100-grid-spread.csv on an H100, docs/data/2026-11-28-h200-grid-spread.csv on an
# H200), sized for ONE 10-minute device call:
#   bash scripts/gpu/gpu_predict.sh [NAME] [extra serve.py overrides...]        (NAME default: predict)
# Builds the spread pair (/tmp/spread8b, --spread 4), then runs through scripts/gpu/gpu_bench.sh
#   recipes/serve.py -m +sweep=predict sglang=triton_bench 'bench.temperature=[0,0.5,1]' 'bench.concurrency=[1,8]'
#     bench.num_prompts=8 'sglang.cuda_graph_bs=[1,8]' spec.num_steps=1,3,5,7 spec.topk=1,2,4,8
#     bench.baseline=false hydra.sweeper.confirm=1 'hydra.sweeper.also=["spec.adaptive=true spec.num_steps=7"]'
# i.e. it measures 7/1/8, 7/8/16 and 1/8/9, predicts the other 13 points at the 6 levels, confirms the one
# predicted to contend at the most levels, then (if the call's time allows) SGLang's adaptive mode with its
# default config. No shared baseline (bench.baseline=false): the winner is chosen on tokens/s, and the
# grid's baseline is in the recorded CSV. Results go under $OUT as they are written (each point's
# metrics.json, predictions.json after the first three points); a point cut off by the time limit is
# lost, the rest stay. (Prompts are drawn category by category since the H200 grid was recorded: the
# same 30-prompt set, another draw of 8; on this pair acceptance barely depends on the prompt.)
# The comparison with the recorded grid of the same card (PREDICT_GRID, default
# the H200's, which the device tool lends now; PREDICT_BASELINE_S the seconds of that grid's shared
# baseline, 191 for the H100's, 0 for the H200's) is written to $OUT/NAME/compare.md; on the CPU:
#   python scripts/analysis/compare_predict.py sweeps/NAME --grid docs/data/2026-11-28-h200-grid-spread.csv
# (after unpacking $OUT/sweep-NAME.tar.gz into sweeps/), which writes the table for docs/benchmarks.md.
# PREDICT_TIMEOUT_S (default 570) bounds the whole run, the pair's build included.
set -uo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:-predict}; [ $# -gt 0 ] && shift
export BENCH_PAIR=/tmp/spread8b BENCH_PAIR_ARGS="--spread 4" BENCH_SWEEP=predict
export BENCH_TIMEOUT_S=${PREDICT_TIMEOUT_S:-570}
bash scripts/gpu/gpu_bench.sh "$NAME" \
  'bench.temperature=[0,0.5,1]' 'bench.concurrency=[1,8]' bench.num_prompts=8 'sglang.cuda_graph_bs=[1,8]' \
  spec.num_steps=1,3,5,7 spec.topk=1,2,4,8 bench.baseline=false \
  hydra.sweeper.confirm=1 'hydra.sweeper.also=["spec.adaptive=true spec.num_steps=7"]' "$@"
rc=$?
GRID=${PREDICT_GRID:-docs/data/2026-11-28-h200-grid-spread.csv}
if [ -f "$GRID" ] && [ -d "sweeps/$NAME" ]; then
  PYTHONPATH=$PWD:${PYTHONPATH:-} python3 scripts/analysis/compare_predict.py "sweeps/$NAME" --grid "$GRID" \
    --baseline-s "${PREDICT_BASELINE_S:-0}" ${OUT:+--out "$OUT/$NAME/compare.md"} || true
fi
exit $rc
