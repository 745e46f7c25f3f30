#!/usr/bin/env bash
# Tensor-parallel serving on a 2-GPU machine, in ONE call bounded well under 10 minutes:
#   bash scripts/gpu/gpu_scale.sh            (device tool: kind nvidia-h100-x2, carry .sgl)
# (a) builds the Llama-3.1-8B-shaped pair (scripts/gpu/build_bench_pair.py; SCALE_SHAPE=tiny for a dry run)
#     and a tiny pair for the lifecycle checks;
# (b) benchmarks EAGLE-3 (spec 3/1/4, greedy) at sglang.tp_size=1 and 2 on the same machine:
#     accept length and output tokens/s at batch 1 and 8 (mode=bench, no baseline);
# (c) serves the tiny pair at tp 2 and stops serve.py with SIGINT, SIGTERM and SIGKILL: after each,
#     no process may be left on any GPU (nvidia-smi --query-compute-apps), within SCALE_CLEAR_S (30 s).
# Then prints a table. Logs and results go to $OUT/scale/ as they are made (./scale-out without $OUT).
# Knobs (env): SCALE_SHAPE (llama-3.1-8b), SCALE_TIMEOUT_S (540: the whole script), SCALE_PROMPTS (16),
# SCALE_TOKENS (128), SCALE_SGLANG (overrides for every server; default: the bundle's settings with CUDA
# graphs off -- they cost ~80 s a start, and both tp sizes run without them, so the comparison holds
# while the absolute tokens/s are below what graphs give), SCALE_SKIP_BENCH=1 / SCALE_SKIP_LIFECYCLE=1.
# SCALE_PAIRS (/tmp): where the pairs are built (reused when there).
# SCALE_DRY=1 runs the same steps against the fake server and tests/fakes/bin/nvidia-smi on a CPU
# machine (a check of this script's logic, never of serving).
set -uo pipefail
cd "$(dirname "$0")/../.."
START=$SECONDS
BUDGET=${SCALE_TIMEOUT_S:-540}
RES=${OUT:-$PWD/scale-out}/scale
mkdir -p "$RES"
# NVLink multicast stays off on the shared GPU hosts (see the device notes); servers inherit these
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} TORCH_SYMM_MEM_DISABLE_MULTICAST=${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1}
export NVSHMEM_DISABLE_NVLS=${NVSHMEM_DISABLE_NVLS:-1} PYTHONUNBUFFERED=1
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
export PYTHONPATH=$PWD:${PYTHONPATH:-}
SHAPE=${SCALE_SHAPE:-llama-3.1-8b}
SG=(${SCALE_SGLANG:-sglang=triton sglang.disable_cuda_graph=true sglang.ready_timeout_s=300})
DEVICE=cuda
if [ -n "${SCALE_DRY:-}" ]; then  # CPU: the fake server and a fake nvidia-smi with 2 GPUs
  SHAPE=tiny DEVICE=cpu
  export PATH=$PWD/tests/fakes/bin:$PATH FAKE_NVIDIA_SMI_GPUS=2 FAKE_SGLANG_RECORD=$RES/fake-servers.jsonl
  export FAKE_NVIDIA_SMI_RECORD=$RES/fake-servers.jsonl AUTOMODEL_SPEC_LOCK_DIR=$RES/leases
  SG=(sglang.python=$PWD/tests/fakes/fake_sglang.py sglang.stop_timeout_s=4)
fi
left() { echo $(( BUDGET - (SECONDS - START) )); }
log() { echo "[gpu_scale $(( SECONDS - START ))s] $*" | tee -a "$RES/steps.log"; }
nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader > "$RES/gpus.txt" 2>&1
cat "$RES/gpus.txt"
NGPU=$(grep -c . "$RES/gpus.txt")
[ "$NGPU" -ge 2 ] || log "only $NGPU GPU(s) here: tp 2 cannot run"

PAIR=${SCALE_PAIRS:-/tmp}/scale-$SHAPE TINY=${SCALE_PAIRS:-/tmp}/scale-tiny
log "building the $SHAPE pair and the tiny pair"
vocab() { [ "$1" = tiny ] && echo 256 || echo 32000; }  # the draft vocabulary must fit the target's
python3 scripts/gpu/build_bench_pair.py --out "$PAIR" --shape "$SHAPE" --device "$DEVICE" --draft-vocab "$(vocab "$SHAPE")" \
    > "$RES/build.log" 2>&1 \
  && python3 scripts/gpu/build_bench_pair.py --out "$TINY" --shape tiny --device "$DEVICE" --draft-vocab 256 \
    >> "$RES/build.log" 2>&1 \
  || { log "pair build failed: $RES/build.log"; tail -5 "$RES/build.log"; exit 1; }

GPUS=${SCALE_GPUS:-0,1}
# (b) tp 1 and tp 2, same workload, one server each
if [ -z "${SCALE_SKIP_BENCH:-}" ]; then
  for TP in 1 2; do
    [ "$TP" -le "$NGPU" ] || continue
    POOL=$([ "$TP" = 1 ] && echo "[${GPUS%%,*}]" || echo "[$GPUS]")
    [ "$(left)" -gt 60 ] || { log "no time left for tp $TP"; continue; }
    log "bench tp $TP ($(left)s left)"
    timeout "$(left)" python3 recipes/serve.py mode=bench draft=trained draft.path="$PAIR/run" \
      target.path="$PAIR/target" "${SG[@]}" sglang.tp_size=$TP "bench.gpu_pool=$POOL" spec.num_steps=3 spec.topk=1 \
      'bench.concurrency=[1,8]' bench.num_prompts=${SCALE_PROMPTS:-16} bench.max_new_tokens=${SCALE_TOKENS:-128} \
      bench.baseline=false hydra.run.dir="$RES/tp$TP" > "$RES/tp$TP.log" 2>&1
    log "tp $TP exit $?: $(grep -o '\[bench\] tp.*' "$RES/tp$TP.log" | tail -1)"
  done
fi

# (c) lifecycle at tp 2: each signal to serve.py alone; then nothing may stay on any GPU
# SCALE_GPUS (default 0,1): the two GPUs this script uses; processes on the host's other GPUs (another
# experiment sharing the machine) are not counted
GPUS=${SCALE_GPUS:-0,1}
SMI_SCOPE=(); [ -n "${SCALE_GPUS:-}" ] && SMI_SCOPE=(-i "$SCALE_GPUS")
gpu_apps() { nvidia-smi "${SMI_SCOPE[@]}" --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>/dev/null | grep -c .; }
if [ -z "${SCALE_SKIP_LIFECYCLE:-}" ] && [ "$NGPU" -ge 2 ]; then
  for SIG in INT TERM KILL; do
    [ "$(left)" -gt 60 ] || { log "no time left for SIG$SIG"; echo "SIG$SIG skipped" >> "$RES/lifecycle.txt"; continue; }
    L=$RES/lifecycle-$SIG.log
    # a script's background job ignores SIGINT; the wrapper gives serve.py the default disposition back
    python3 -c 'import os,signal,sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
      env CUDA_VISIBLE_DEVICES="$GPUS" python3 recipes/serve.py draft=trained draft.path="$TINY/run" target.path="$TINY/target" "${SG[@]}" \
      sglang.tp_size=2 hydra.run.dir="$RES/serve-$SIG" > "$L" 2>&1 &
    PID=$!
    T0=$SECONDS
    until grep -q "test generation:" "$L" || ! kill -0 $PID 2>/dev/null || [ $(( SECONDS - T0 )) -gt 300 ]; do sleep 0.2; done
    BEFORE=$(gpu_apps)
    ps -eo pid,pgid,cmd | grep -E "sglang|fake_sglang" | grep -v grep > "$RES/processes-$SIG.txt"
    kill -$SIG $PID 2>/dev/null
    wait $PID; RC=$?
    T1=$SECONDS
    while [ "$(gpu_apps)" -gt 0 ] && [ $(( SECONDS - T1 )) -lt ${SCALE_CLEAR_S:-30} ]; do sleep 0.2; done
    AFTER=$(gpu_apps)
    nvidia-smi "${SMI_SCOPE[@]}" --query-compute-apps=pid,process_name,used_memory --format=csv,noheader > "$RES/left-$SIG.txt" 2>&1
    VERDICT=$([ "$AFTER" = 0 ] && [ "$BEFORE" -gt 0 ] && echo ok || echo FAIL)
    echo "SIG$SIG serve.py exit $RC, GPU processes before $BEFORE, after $AFTER (${SCALE_CLEAR_S:-30}s at most: $(( SECONDS - T1 ))s) $VERDICT" \
      | tee -a "$RES/lifecycle.txt"
  done
fi

python3 - "$RES" <<'PY' | tee "$RES/table.md"
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
print("| tp | concurrency | output tok/s | accept length | boot s | GPUs |")
print("|---:|---:|---:|---:|---:|---|")
for tp in (1, 2):
    try:
        m = json.loads((res / f"tp{tp}" / "metrics.json").read_text())
    except (OSError, ValueError):
        print(f"| {tp} | - | not measured | | | |")
        continue
    if m.get("status") != "ok":
        print(f"| {tp} | - | {m.get('status')}: {str(m.get('error', ''))[:80]} | | | |")
        continue
    for lv in m["levels"].values():
        acc = lv.get("accept_length")
        print(f"| {tp} | {lv['concurrency']} | {lv['output_tok_per_s']:.1f} | {acc if acc is None else f'{acc:.2f}'} "
              f"| {m.get('boot_s', 0):.0f} | {','.join(m.get('gpus') or [])} |")
life = res / "lifecycle.txt"
print("\n" + (life.read_text() if life.exists() else "lifecycle: not run"))
PY
log "done"
