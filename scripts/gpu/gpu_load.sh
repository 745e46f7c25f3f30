#!/usr/bin/env bash
# The sweep's per-load schedule served under a load that changes, beside fixed settings, on one GPU.
#   bash scripts/gpu/gpu_load.sh grid            # 1. the sweep that writes the schedule (repeat until complete)
#   bash scripts/gpu/gpu_load.sh live-fixed      # 2. every grid setting (chains and trees) under the phased load
#   bash scripts/gpu/gpu_load.sh live-schedule   # 3. the schedule: SGLang's adaptive mode with the sweep's config
#   bash scripts/gpu/gpu_load.sh live-default    # 4. SGLang's adaptive mode with its own default candidates
#   bash scripts/gpu/gpu_load.sh live            # 2-4 in one call: of the fixed settings only the grid's best chain
#       and best tree for the whole phased run (scripts/gpu/load_fixed.py), each bounded by its share of BENCH_TIMEOUT_S
# Each stage is one resumable gpu_bench.sh call (sized for a 10-minute call; its knobs apply: BENCH_TIMEOUT_S,
# $OUT and .bench/ to carry the sweeps between machines). Stages 2-4 share one sweep, sweeps/load-live, whose
# summary.md has the "Phased load" table: per phase and for the whole run, each setting's tokens/s, p99 ITL and
# goodput, and no speculation (the sweep's shared baseline, measured under the same phases).
# Knobs: LOAD_PAIR (default /tmp/spread8b, built with --spread 4 so trees can win; or the real pair widened to
# Llama-3.1-8B's shapes, /tmp/real/wide after gpu_real_pair.sh train and widen: trained acceptance, trained anew on
# each machine, so its grid and live stages belong on one machine: a carried grid is of the pair it measured), LOAD_GRID (default
# "spec.num_steps=1,3,5,7 spec.topk=1,8"), LOAD_TEMPERATURE (default 1: partial acceptance), LOAD_PHASES (default
# [c1,c8,c32,c1]), LOAD_PROMPTS (requests a level or phase, default 16), LOAD_SLO (goal overrides, default
# "bench.slo.itl_s=0.04 bench.slo.ttft_s=1"), LOAD_OBJECTIVE (what the grid's schedule is chosen by: tok_per_s,
# the default, or goodput), LOAD_SHARE (servers sharing the GPU, default 2: an 8B-shaped server at
# mem_fraction_static 0.42 starts while the other is measured; 1 serves one at a time); a stage's extra
# arguments are passed to serve.py.
# The schedule starts at its largest candidate: SGLang 0.5.15-0.5.18 die at startup below it (docs/sglang-releases.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:?usage: gpu_load.sh grid|live-fixed|live-schedule|live-default|live [overrides...]}; shift
export BENCH_PAIR=${LOAD_PAIR:-/tmp/spread8b} BENCH_PAIR_ARGS=${BENCH_PAIR_ARGS:---spread 4}
read -r -a GRID <<< "${LOAD_GRID:-spec.num_steps=1,3,5,7 spec.topk=1,8}"
read -r -a SLO <<< "${LOAD_SLO:-bench.slo.itl_s=0.04 bench.slo.ttft_s=1}"
COMMON=("bench.temperature=[${LOAD_TEMPERATURE:-1}]" "bench.num_prompts=${LOAD_PROMPTS:-16}" "${SLO[@]}")
# two 8B-shaped servers fit an 80 GB card at 0.42 each (the second sizes from what the first left: ~19 GB for
# 16 GB of weights and the cache of 32 requests); measured alone all the same (docs/benchmarks.md, "Sharing a GPU")
SHARE=${LOAD_SHARE:-2}
[ "$SHARE" -gt 1 ] && COMMON+=(+launcher=parallel "bench.servers_per_gpu=$SHARE" \
  "sglang.mem_fraction_static=$(python3 -c "print(round(0.84 / $SHARE, 2))")")
LIVE=("${COMMON[@]}" "bench.phases=${LOAD_PHASES:-[c1,c8,c32,c1]}")
SCHEDULE=$PWD/sweeps/load-grid/presets/adaptive_config.json
if [ ! -d sweeps/load-grid ] && [ -f .bench/sweep-load-grid.tar.gz ]; then  # stage 1's sweep, carried back
  mkdir -p sweeps && tar -xzf .bench/sweep-load-grid.tar.gz -C sweeps && echo "[gpu_load] sweeps/load-grid restored"
fi
case "$STAGE" in
  grid)
    exec bash scripts/gpu/gpu_bench.sh load-grid "${GRID[@]}" "${COMMON[@]}" 'bench.concurrency=[1,8,32]' \
      "bench.objective=${LOAD_OBJECTIVE:-tok_per_s}" "$@" ;;
  live-fixed)
    exec bash scripts/gpu/gpu_bench.sh load-live "${GRID[@]}" "${LIVE[@]}" "$@" ;;
  live-schedule)
    [ -f "$SCHEDULE" ] || { echo "[gpu_load] no $SCHEDULE: run the grid stage to its end first (a schedule is" \
      "written only where the winning chain changes with load)"; exit 1; }
    START=$(python3 -c "import json,sys; print(max(max(v['candidate_steps']) for v in json.load(open(sys.argv[1])).values()))" "$SCHEDULE")
    cat "$SCHEDULE"
    exec bash scripts/gpu/gpu_bench.sh load-live spec.adaptive=true "spec.adaptive_config=$SCHEDULE" \
      "spec.num_steps=$START" spec.topk=1 "${LIVE[@]}" "$@" ;;
  live-default)
    exec bash scripts/gpu/gpu_bench.sh load-live spec.adaptive=true spec.num_steps=7 spec.topk=1 "${LIVE[@]}" "$@" ;;
  live)  # the grid's best fixed chain and tree (load_fixed.py) take half the bound, the two adaptive ones a quarter each
    BOUND=${BENCH_TIMEOUT_S:-540}
    PHASES=${LOAD_PHASES:-[c1,c8,c32,c1]}
    FIXED=$(python3 scripts/gpu/load_fixed.py sweeps/load-grid --phases "$PHASES" --num-prompts "${LOAD_PROMPTS:-16}" \
      --temperature "${LOAD_TEMPERATURE:-1}") || exit 1
    # the chain's sweep starts the shared baseline too (two servers), the tree's (if the grid had one) the rest
    { read -r CHAIN; read -r TREE; } <<< "$FIXED"
    LOAD_GRID=$CHAIN BENCH_TIMEOUT_S=$(( BOUND * 3 / 8 )) bash "$0" live-fixed "$@"
    [ -n "${TREE:-}" ] && LOAD_GRID=$TREE BENCH_TIMEOUT_S=$(( BOUND / 2 - SECONDS )) bash "$0" live-fixed "$@"
    BENCH_TIMEOUT_S=$(( (BOUND - SECONDS) / 2 )) bash "$0" live-schedule "$@"
    BENCH_TIMEOUT_S=$(( BOUND - SECONDS )) bash "$0" live-default "$@" ;;
  *) echo "usage: gpu_load.sh grid|live-fixed|live-schedule|live-default|live [overrides...]"; exit 2 ;;
esac
