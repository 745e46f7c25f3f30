#!/usr/bin/env bash
# Served against the reference for trees and sampling on the real pair (docs/benchmarks.md, "Reference
# accept length"), on the machine where `gpu_real_pair.sh train` left the pair in REAL_DIR; each stage
# fits one 10-minute call and resumes what an earlier call finished:
#   bash scripts/gpu/real_pair/gpu_tree_table.sh sweeps   # both producers' drafts at 3/1/4, 5/4/8, 3/8/16,
#       T=0 and T=1, concurrency 1, the reference on (sweeps/real-trees-am, sweeps/real-trees-sf)
#   bash scripts/gpu/real_pair/gpu_tree_table.sh broken   # break_draft.py's logit_flat and logit_warm
#       through mode=check: today's check (the 3/1/4 chain at T=0) and the new one (the 5/4/8 tree at T=0),
#       each against the trained draft's reference for that setting (bench.expected_accept_length = 0.95 x
#       it); and logit_sharp against the chain at T=1 with --speculative-use-rejection-sampling, which
#       SGLang serves only for a draft over the target's whole vocabulary (skipped for a d2t draft)
#   bash scripts/gpu/real_pair/gpu_tree_table.sh all      # both at once, every server sharing the GPU (the
#       table is about accept lengths, which sharing does not move; timings from it are not comparable);
#       give it a whole call: its ten servers start side by side for 2-3 minutes, and no point is measured
#       while a server of the GPU is starting (docs/gpu-runs.md, 2026-12-07)
# Knobs: TREES_SHARE servers on the GPU at once (default 4) at TREES_MEM of its memory each (default 0.2).
# Results (logs, metrics, summaries, the references' JSON; no weights) go to $OUT/real-trees-STAGE.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/../../.."
STAGE=${1:?usage: gpu_tree_table.sh sweeps|broken|all}
if [ "$STAGE" = all ]; then  # the two stages side by side, each under the same bound, each packing its own results
  set -m
  bash "$0" sweeps & S=$!
  sleep 20
  bash "$0" broken & B=$!
  wait $S $B
  exit 0
fi
R=${REAL_DIR:-/tmp/real}
RES=/tmp/real-results/trees-$STAGE
BOUND=${REAL_BOUND_S:-570}   # the whole stage, so that its results are packed before the call ends
mkdir -p "$RES"
# shellcheck source=scripts/gpu/real_pair/_await.sh
source scripts/gpu/real_pair/_await.sh
pack() { [ -n "${OUT:-}" ] && tar -czf "$OUT/real-trees-$STAGE.tar.gz" -C /tmp/real-results "trees-$STAGE" 2>/dev/null; }
trap pack EXIT
left() { echo $(( BOUND - SECONDS )); }
exec > >(tee -a "$RES/console.log") 2>&1
echo "[trees] stage $STAGE on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
[ -d "$R/target" ] && [ -d "$R/automodel_run" ] || { echo "[trees] no trained pair in $R: run gpu_real_pair.sh train first"; exit 3; }
if [ ! -f /tmp/producer-site/.installed ] && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/producer-site .whl/*.whl 2>&1 | tail -3
  touch /tmp/producer-site/.installed
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}/tmp/producer-site:$PWD
SF_DRAFT=$R/specforge_run
[ -f "$R/specforge_run/sglang_export/config.json" ] && SF_DRAFT=$R/specforge_run/sglang_export
AM_EXPORT=$(python3 recipes/export.py draft=trained draft.path="$R/automodel_run" target.path="$R/target" 2> "$RES/export-am.err" | tail -1)
echo "[trees] automodel export: $AM_EXPORT"
COMMON=(bench=humaneval target.path="$R/target" sglang=triton_bench bench.num_prompts=16 'bench.concurrency=[1]')
GPU_SHARE=(bench.servers_per_gpu="${TREES_SHARE:-4}" sglang.mem_fraction_static="${TREES_MEM:-0.2}")

if [ "$STAGE" = sweeps ]; then
  # one sweep per draft and setting, all into the draft's sweep directory (one baseline each); four
  # servers share the GPU (the pair is small); a sweep stopped by the bound resumes in the next call
  SHARE=(+launcher=parallel "${GPU_SHARE[@]}" hydra.launcher.n_jobs=1
         bench.reference=true 'bench.temperature=[0,1]')
  set -m  # each sweep in a process group of its own: timeout's SIGTERM reaches the recipe, which stops its servers
  PIDS=()
  for d in am sf; do
    path=$R/automodel_run; [ "$d" = sf ] && path=$SF_DRAFT
    for s in "3 1 4" "5 4 8" "3 8 16"; do
      read -r st k nd <<< "$s"
      timeout -k 30 -s TERM "$(( $(left) - 60 ))" python3 recipes/serve.py -m +sweep=grid "${COMMON[@]}" "${SHARE[@]}" \
        bench.name="real-trees-$d" draft=trained draft.path="$path" spec.num_steps="$st" spec.topk="$k" \
        spec.num_draft_tokens="$nd" > "$RES/sweep-$d-$st-$k-$nd.log" 2>&1 &
      PIDS+=($!)
      sleep 5
    done
  done
  await_pids trees 'sweeps/real-trees-*/*/metrics.json' 30 "${PIDS[@]}"
  set +m
  for d in am sf; do
    python3 -m automodel_spec.sweep "sweeps/real-trees-$d" > "$RES/aggregate-$d.log" 2>&1
    tar -czf "$RES/sweep-real-trees-$d.tar.gz" --exclude='*.safetensors' --exclude='records.jsonl' -C sweeps "real-trees-$d"
    sed -n '/## Served as trained/,/^## [^S]/p' "sweeps/real-trees-$d/summary.md" 2>/dev/null | head -30
  done
  exit 0
fi

if [ "$STAGE" = broken ]; then
  reference() {  # NAME DRAFT_DIR ARGS...: the reference's JSON, computed once
    local name=$1 dir=$2; shift 2
    [ -f "$RES/reference-$name.json" ] || timeout "$(( $(left) - 30 ))" python3 -m automodel_spec.bench.reference \
      --target "$R/target" --draft "$dir" --prompts humaneval --num-prompts 16 --max-new-tokens 128 --device cuda \
      --json "$RES/reference-$name.json" "$@" > "$RES/reference-$name.log" 2>&1
    echo "[trees] reference $name rc=$? ($SECONDS s)"; tail -3 "$RES/reference-$name.log"
  }
  floor() { python3 -c "import json,sys; print(round(0.95 * json.load(open(sys.argv[1]))['accept_length'], 3))" "$1"; }
  check() {  # NAME FLOOR_JSON overrides...: mode=check of a broken draft, its exit code kept
    local name=$1 ref=$2; shift 2
    [ -f "$RES/check-$name.rc" ] && { echo "[trees] check $name: done before (rc $(cat "$RES/check-$name.rc"))"; return; }
    timeout -k 30 -s TERM "$(( $(left) - 30 ))" python3 recipes/serve.py mode=check "${COMMON[@]}" "${GPU_SHARE[@]}" \
      bench.expected_accept_length="$(floor "$RES/reference-$ref.json")" hydra.run.dir="$RES/check-$name" "$@" \
      > "$RES/check-$name.log" 2>&1
    local rc=$?
    [ "$rc" -le 1 ] && echo "$rc" > "$RES/check-$name.rc"  # 0 passed, 1 failed: a verdict; others: call again
    echo "[trees] check $name rc=$rc ($SECONDS s)"; grep -E "check (passed|FAILED)|^  - " "$RES/check-$name.log" | head -6
  }
  reference good-chain "$AM_EXPORT" --num-steps 3 & REFS=($!)
  reference good-tree "$AM_EXPORT" --num-steps 5 --topk 4 --num-draft-tokens 8 & REFS+=($!)
  for k in logit_flat logit_warm logit_sharp; do
    [ -d "$R/broken-$k" ] || python3 scripts/gpu/real_pair/break_draft.py "$AM_EXPORT" "$R/broken-$k" "$k" --target "$R/target"
  done
  wait "${REFS[@]}"  # by pid: a bare `wait` would wait for this script's own `tee` too
  set -m  # each check in a process group of its own: timeout's SIGTERM reaches the recipe, which stops its server
  CHECKS=()
  for k in logit_flat logit_warm; do
    B=(draft=trained draft.path="$R/broken-$k")
    check "$k-chain-t0" good-chain "${B[@]}" spec.num_steps=3 spec.topk=1 & CHECKS+=($!)
    check "$k-tree-t0" good-tree "${B[@]}" spec.num_steps=5 spec.topk=4 spec.num_draft_tokens=8 & CHECKS+=($!)
  done
  if python3 -c "import sys; from safetensors import safe_open; sys.exit(any('d2t' in safe_open(str(f), 'pt').keys() for f in __import__('pathlib').Path(sys.argv[1]).glob('*.safetensors')))" "$AM_EXPORT"; then
    reference good-t1-rejection "$AM_EXPORT" --num-steps 3 --temperature 1 --rejection-sampling
    check "logit_sharp-chain-t1-rejection" good-t1-rejection draft=trained draft.path="$R/broken-logit_sharp" \
      spec.num_steps=3 spec.topk=1 'bench.temperature=[1]' 'sglang.extra_args=[--speculative-use-rejection-sampling]'
  else
    echo "[trees] the draft maps a reduced vocabulary (d2t): SGLang serves rejection sampling only for a full one; skipped"
  fi
  wait "${CHECKS[@]}"
  exit 0
fi
echo "unknown stage $STAGE"; exit 2
