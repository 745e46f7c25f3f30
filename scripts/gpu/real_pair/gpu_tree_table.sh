#!/usr/bin/env bash
# Served against the reference for trees and sampling on the real pair (docs/benchmarks.md, "Reference
# accept length"), in one 10-minute call on the machine where `gpu_real_pair.sh train` left the pair in REAL_DIR:
#   bash scripts/gpu/real_pair/gpu_tree_table.sh          # all four steps below (a second call resumes them)
#   bash scripts/gpu/real_pair/gpu_tree_table.sh checks   # step 3 alone: the broken drafts' checks
# 1. the references (`python -m automodel_spec.bench.reference`), each a process of its own, all side by side on
#    the GPU from the start: both producers' drafts at 3/1/4, 5/4/8 and 3/8/16, T=0 and T=1 (TREES_SAMPLES
#    generations a prompt, default 2). Not the sweeps' own: a sweep computes its points' references one at a
#    time on a GPU where no server starts or is measured, and twelve of those do not fit a call;
# 2. the same settings served, one sweep each (sweeps/real-trees-am, sweeps/real-trees-sf), TREES_SHARE
#    servers on the GPU at once (default 5) at TREES_MEM of its memory (default 0.1), no baseline (speed from
#    a shared GPU is not comparable), CUDA graphs for batch 1 only (the table is about accept lengths);
# 3. break_draft.py's logit_flat and logit_warm through mode=check (reference on, no baseline, CHECK_TOKENS
#    new tokens, default 64): today's check (the 3/1/4 chain at T=0) and the new one (the 5/4/8 tree at T=0),
#    each against the trained draft's reference for that setting (bench.expected_accept_length = 0.95 x it),
#    without CUDA graphs; in the checks stage one after another, each verdict kept (a second call resumes them:
#    each is a server's start, 42-126 s on an H100, and its measurement, so four do not fit beside `train`; one
#    with less than CHECK_MIN_S left, default 120, is not started);
#    and logit_sharp against the chain at T=1 with --speculative-use-rejection-sampling, which SGLang serves
#    only for a draft over the target's whole vocabulary (skipped for a d2t draft);
# 4. tree_table.py: every served level against its reference with the benchmark's verdicts ($RES/table.md).
# Everything is bounded by REAL_BOUND_S (default 570) and packed into $OUT/real-trees.tar.gz (no weights).
# Servers sharing a GPU start one at a time up to their memory sizing (bench/placement.py), about 55 s each
# for this pair, and none is measured while another starts: in the all stage the checks, queued last behind
# the sweeps' servers, may not finish (run the checks stage after it).
set -uo pipefail
cd "$(dirname "$0")/../../.."
STAGE=${1:-all}
case "$STAGE" in all|checks) ;; *) echo "usage: gpu_tree_table.sh [all|checks]"; exit 2 ;; esac
R=${REAL_DIR:-/tmp/real}
RES=/tmp/real-results/trees
BOUND=${REAL_BOUND_S:-570}
mkdir -p "$RES"
# shellcheck source=scripts/gpu/real_pair/_await.sh
source scripts/gpu/real_pair/_await.sh
pack() { [ -n "${OUT:-}" ] && tar -czf "$OUT/real-trees.tar.gz" -C /tmp/real-results trees 2>/dev/null; }
trap pack EXIT
left() { echo $(( BOUND - SECONDS )); }
exec > >(tee -a "$RES/console.log") 2>&1
echo "[trees] on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
[ -d "$R/target" ] && [ -d "$R/automodel_run" ] || { echo "[trees] no trained pair in $R: run gpu_real_pair.sh train first"; exit 3; }
# shellcheck source=scripts/gpu/_producer_wheels.sh
source scripts/gpu/_producer_wheels.sh && PRODUCERS=$(install_producer_wheels)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PRODUCERS:$PWD
SF_DRAFT=$R/specforge_run
[ -f "$R/specforge_run/sglang_export/config.json" ] && SF_DRAFT=$R/specforge_run/sglang_export
export_of() { python3 recipes/export.py draft=trained draft.path="$1" target.path="$R/target" 2> "$RES/export-$2.err" | tail -1; }
AM_EXPORT=$(export_of "$R/automodel_run" am); SF_EXPORT=
[ "$STAGE" = all ] && SF_EXPORT=$(export_of "$SF_DRAFT" sf)  # the checks break the Automodel draft only
echo "[trees] exports: am=$AM_EXPORT sf=$SF_EXPORT ($SECONDS s)"
SETTINGS=("3 1 4" "5 4 8" "3 8 16")

reference() {  # NAME DRAFT_DIR NEW_TOKENS ARGS...: one reference's JSON, bounded by the call
  local name=$1 dir=$2 tokens=$3; shift 3
  [ -f "$RES/$name.json" ] && return 0
  timeout -k 10 "$(( $(left) - 45 ))" python3 -m automodel_spec.bench.reference --target "$R/target" --draft "$dir" \
    --prompts humaneval --num-prompts 16 --max-new-tokens "$tokens" --device cuda --json "$RES/$name.json" "$@" \
    > "$RES/$name.log" 2>&1
  echo "[trees] $name rc=$? ($SECONDS s): $(grep -m1 -E 'accept length' "$RES/$name.log")"
}
# 1. every reference at once, before any server takes its share of the GPU's memory
REFS=()
[ "$STAGE" = checks ] && SETTINGS=()
for d in am sf; do
  dir=$AM_EXPORT; [ "$d" = sf ] && dir=$SF_EXPORT
  for s in "${SETTINGS[@]}"; do
    read -r st k nd <<< "$s"
    TREE=(); [ "$k" -gt 1 ] && TREE=(--topk "$k" --num-draft-tokens "$nd")
    reference "reference-$d-$st-$k-$nd-t0" "$dir" 128 --num-steps "$st" "${TREE[@]}" & REFS+=($!)
    reference "reference-$d-$st-$k-$nd-t1" "$dir" 128 --num-steps "$st" "${TREE[@]}" --temperature 1 \
      --samples "${TREES_SAMPLES:-2}" & REFS+=($!)
  done
done
CHECK_TOKENS=${CHECK_TOKENS:-64}
reference floor-chain "$AM_EXPORT" "$CHECK_TOKENS" --num-steps 3 & FLOORS=($!)
reference floor-tree "$AM_EXPORT" "$CHECK_TOKENS" --num-steps 5 --topk 4 --num-draft-tokens 8 & FLOORS+=($!)
for k in logit_flat logit_warm logit_sharp; do
  [ -d "$R/broken-$k" ] || python3 scripts/gpu/real_pair/break_draft.py "$AM_EXPORT" "$R/broken-$k" "$k" --target "$R/target" \
    > "$RES/break-$k.log" 2>&1
done

# 2. the six settings served
COMMON=(bench=humaneval target.path="$R/target" sglang=triton_bench 'sglang.cuda_graph_bs=[1]' bench.num_prompts=16
        'bench.concurrency=[1]' bench.baseline=false bench.servers_per_gpu="${TREES_SHARE:-5}"
        sglang.mem_fraction_static="${TREES_MEM:-0.1}")
set -m  # each sweep and check in a process group of its own: timeout's SIGTERM reaches the recipe, which stops its servers
SERVED=()
for d in am sf; do
  [ "$STAGE" = checks ] && break
  path=$R/automodel_run; [ "$d" = sf ] && path=$SF_DRAFT
  for s in "${SETTINGS[@]}"; do
    read -r st k nd <<< "$s"
    timeout -k 30 -s TERM "$(( $(left) - 50 ))" python3 recipes/serve.py -m +sweep=grid "${COMMON[@]}" +launcher=parallel \
      hydra.launcher.n_jobs=1 bench.reference=false 'bench.temperature=[0,1]' bench.name="real-trees-$d" draft=trained \
      draft.path="$path" spec.num_steps="$st" spec.topk="$k" spec.num_draft_tokens="$nd" \
      > "$RES/sweep-$d-$st-$k-$nd.log" 2>&1 &
    SERVED+=($!)
    sleep 3
  done
done

# 3. the broken drafts through mode=check, once the floors are known
wait "${FLOORS[@]}"  # by pid: a bare `wait` would wait for this script's own `tee` too
floor() { python3 -c "import json,sys; print(round(0.95 * json.load(open(sys.argv[1]))['accept_length'], 3))" "$1"; }
check() {  # NAME FLOOR overrides...: mode=check of a broken draft, its exit code kept
  local name=$1 ref=$2; shift 2
  [ -f "$RES/check-$name.rc" ] && return 0
  [ -f "$RES/$ref.json" ] || { echo "[trees] check $name: no $ref reference"; return 0; }
  # a server's start and a measurement take a minute or more: with less left the check could give no verdict
  [ "$(left)" -gt "${CHECK_MIN_S:-120}" ] || { echo "[trees] check $name: $(left) s left, too few: call the checks stage again"; return 0; }
  timeout -k 30 -s TERM "$(( $(left) - 45 ))" python3 recipes/serve.py mode=check "${COMMON[@]}" \
    bench.max_new_tokens="$CHECK_TOKENS" bench.expected_accept_length="$(floor "$RES/$ref.json")" \
    hydra.run.dir="$RES/check-$name" "$@" > "$RES/check-$name.log" 2>&1
  local rc=$?
  [ "$rc" -le 1 ] && echo "$rc" > "$RES/check-$name.rc"  # 0 passed, 1 failed: a verdict; others: none
  echo "[trees] check $name rc=$rc ($SECONDS s)"; grep -E "check (passed|FAILED)|^  - " "$RES/check-$name.log" | head -6
}
# no CUDA graphs for the checks: they read accept lengths, and capturing (with the first Triton compiles) took
# the first check's server 126 s to be ready on an H100
NO_GRAPHS=(sglang.cuda_graph_bs=null sglang.disable_cuda_graph=true)
# Alone (the checks stage) they run one after another, the tree (which must fail) before the chain (which must
# pass): a measurement waits until no server of the GPU is starting (serve/gpu_pool.py), so four started side
# by side measure nothing until the last has started, and a bound that cuts them leaves no verdict at all
# (four side by side, bounded at 180 s on an H100, gave none); one at a time, each verdict is kept as it comes.
# Beside the sweeps (all) they run in the background, as the sweeps do.
for k in logit_flat logit_warm; do
  B=(draft=trained draft.path="$R/broken-$k" "${NO_GRAPHS[@]}")
  for shape in tree chain; do
    S=(spec.num_steps=3 spec.topk=1); [ "$shape" = tree ] && S=(spec.num_steps=5 spec.topk=4 spec.num_draft_tokens=8)
    if [ "$STAGE" = checks ]; then check "$k-$shape-t0" "floor-$shape" "${B[@]}" "${S[@]}"
    else check "$k-$shape-t0" "floor-$shape" "${B[@]}" "${S[@]}" & SERVED+=($!); fi
  done
done
if python3 -c "import sys; from safetensors import safe_open; sys.exit(any('d2t' in safe_open(str(f), 'pt').keys() for f in __import__('pathlib').Path(sys.argv[1]).glob('*.safetensors')))" "$AM_EXPORT"; then
  ( reference floor-t1-rejection "$AM_EXPORT" "$CHECK_TOKENS" --num-steps 3 --temperature 1 --rejection-sampling
    check "logit_sharp-chain-t1-rejection" floor-t1-rejection draft=trained draft.path="$R/broken-logit_sharp" "${NO_GRAPHS[@]}" \
      spec.num_steps=3 spec.topk=1 'bench.temperature=[1]' 'sglang.extra_args=[--speculative-use-rejection-sampling]' ) &
  SERVED+=($!)
else
  echo "[trees] the draft maps a reduced vocabulary (d2t): SGLang serves rejection sampling only for a full one; skipped"
fi
await_pids trees 'sweeps/real-trees-*/*/metrics.json' 30 "${SERVED[@]}" "${REFS[@]}"
set +m

# 4. the table
[ "$STAGE" = checks ] && { grep -h "" "$RES"/check-*.rc 2>/dev/null | paste -sd' '; python3 scripts/gpu/real_pair/tree_table.py \
  --references "$RES" --checks "$RES" > "$RES/checks.md" 2>&1; cat "$RES/checks.md"; exit 0; }
for d in am sf; do
  tar -czf "$RES/sweep-real-trees-$d.tar.gz" --exclude='*.safetensors' --exclude='records.jsonl' -C sweeps "real-trees-$d" 2>/dev/null
done
python3 scripts/gpu/real_pair/tree_table.py --references "$RES" --sweep am=sweeps/real-trees-am \
  --sweep sf=sweeps/real-trees-sf --checks "$RES" --json "$RES/table.json" > "$RES/table.md" 2> "$RES/table.err"
echo "[trees] table rc=$? ($SECONDS s)"; cat "$RES/table.md" "$RES/table.err"
