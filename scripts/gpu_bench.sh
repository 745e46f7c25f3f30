#!/usr/bin/env bash
# Benchmark sweep on a GPU machine, sized for one 10-minute call and resumable across calls.
#   bash scripts/gpu_bench.sh NAME [serve.py overrides...]
# e.g. bash scripts/gpu_bench.sh h100-chain spec.num_steps=1,3,5,7 spec.topk=1 'bench.concurrency=[1,8]'
# Builds the synthetic Llama-3.1-8B-shaped pair once (/tmp/bench8b), then runs
#   recipes/serve.py -m +sweep=grid bench.name=NAME ...   (sweeps/NAME, finished points are skipped)
# and copies the summary to $OUT when set. BENCH_TIMEOUT_S (default 540) bounds the sweep; a point
# cut off by it is simply measured again by the next call of the same command.
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: gpu_bench.sh NAME [overrides...]}; shift
if [ -f .sgl/site.tar.xz ] && ! python3 -c "import sglang" 2>/dev/null; then
  mkdir -p /tmp/site && tar -xJf .sgl/site.tar.xz -C /tmp/site
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1 || true
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PAIR=${BENCH_PAIR:-/tmp/bench8b}
python3 scripts/build_bench_pair.py --out "$PAIR" --shape llama-3.1-8b --device cuda || exit 1
timeout "${BENCH_TIMEOUT_S:-540}" python3 recipes/serve.py -m +sweep=grid bench.name="$NAME" \
  draft=automodel draft.path="$PAIR/run" target.path="$PAIR/target" sglang=h100_bundle "$@"
rc=$?
python3 -m automodel_spec.sweep "sweeps/$NAME" >/dev/null 2>&1 || true
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/$NAME"
  cp sweeps/"$NAME"/summary.* sweeps/"$NAME"/best_override.txt sweeps/"$NAME"/heatmap_c*.png "$OUT/$NAME"/ 2>/dev/null
fi
cat "sweeps/$NAME/summary.md" 2>/dev/null
exit $rc
