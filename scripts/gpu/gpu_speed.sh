#!/usr/bin/env bash
# Speed at 8B shapes on one GPU (docs/benchmarks.md, "Attention backends at 8B shapes"), in stages that
# each fit one 10-minute call on the same warm machine; call a stage again to continue it:
#   bash scripts/gpu/gpu_speed.sh sweep      # triton vs flashinfer: baseline, 3/1/4, 5/1/6, 7/1/8, 3/8/16;
#                                            # then SGLang's own choice and adaptive mode (triton)
#   bash scripts/gpu/gpu_speed.sh overhead   # the launcher against a hand-typed launch, 4 alternated rounds
#   bash scripts/gpu/gpu_speed.sh shared     # flashinfer 7/1/8 and 5/1/6 in two queues beside each other,
#                                            # then each server's start, memory sized and ready (the start gate)
# The pair is build_bench_pair.py --spread 4 in SPEED_PAIR (default /tmp/spread8b). The sweep writes
# sweeps/speed; two servers share the GPU (bench.servers_per_gpu=2): they start side by side and each
# is measured alone beside the other, idle. Workload as the 2026-11-27 grid: the built-in prompts, 8
# requests of 128 tokens at batch 1 (16 at 8), T = 0, 0.5, 1. Results (no weights) go to
# $OUT/speed-STAGE.tar.gz as the stage ends, also when its time bound (SPEED_BOUND_S, 570) cuts it.
set -uo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:?usage: gpu_speed.sh sweep|overhead|shared}
PAIR=${SPEED_PAIR:-/tmp/spread8b}
RES=/tmp/speed-results/$STAGE
BOUND=${SPEED_BOUND_S:-570}
mkdir -p "$RES"
pack() {
  [ -d sweeps/speed ] && tar -czf "$RES/sweep-speed.tar.gz" --exclude='*.safetensors' -C sweeps speed 2>/dev/null
  [ -n "${OUT:-}" ] && tar -czf "$OUT/speed-$STAGE.tar.gz" -C /tmp/speed-results "$STAGE" 2>/dev/null
}
trap pack EXIT
exec > >(tee -a "$RES/console.log") 2>&1
echo "[speed] $STAGE at $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
source scripts/gpu/_sglang_bundle.sh && use_sglang_bundle
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -c "import sglang; print('[speed] SGLang', sglang.__version__)"
python3 scripts/gpu/build_bench_pair.py --out "$PAIR" --shape llama-3.1-8b --device cuda --spread 4 || exit 1
echo "[speed] pair ready at ${SECONDS}s"

if [ "$STAGE" = overhead ]; then
  LEFT=$(( BOUND - SECONDS - 10 ))
  # a round starts two servers (~65 s each at 8B shapes): none is started in the last 150 s of the bound
  OUT=$RES timeout -k 20 -s TERM "$LEFT" python3 scripts/gpu/bench_overhead.py --draft "$PAIR/run" \
    --target "$PAIR/target" --rounds "${SPEED_ROUNDS:-4}" --prompts 16 --resume "$RES/overhead.json" \
    --deadline-s $(( LEFT - 150 )) --attention-backend "${SPEED_BACKEND:-triton}" --cuda-graph-bs 1 \
    --mem-fraction-static 0.6
  echo "[speed] overhead rc=$? at ${SECONDS}s"
  exit 0
fi

COMMON=(draft=trained draft.path="$PAIR/run" target.path="$PAIR/target" sglang=triton_bench
        'sglang.cuda_graph_bs=[1,8]' sglang.mem_fraction_static=0.44 bench.servers_per_gpu=2 bench.name=speed
        bench.num_prompts=8 'bench.temperature=[0,0.5,1]' 'bench.concurrency=[1,8]' bench.reference=false)
sweep() {  # LOG OVERRIDES...: one multirun into sweeps/speed, bounded by what is left of the stage
  local log=$1 left=$(( BOUND - SECONDS - 25 )); shift
  [ "$left" -gt 90 ] || { echo "[speed] ${SECONDS}s: no time for $*"; return 0; }
  echo "[speed] ${SECONDS}s: $*"
  timeout -k 20 -s TERM "$left" python3 recipes/serve.py -m +sweep=grid "${COMMON[@]}" "$@" >> "$RES/$log.log" 2>&1
  echo "[speed] ${SECONDS}s: rc=$? for $*"
}
any_alive() { for q; do kill -0 "$q" 2>/dev/null && return 0; done; return 1; }
await_queues() {  # EVERY_S PID...: wait for the sweep queues, saying every EVERY_S what is written
  local every=$1; shift
  while any_alive "$@"; do
    sleep "$every"
    echo "[speed] ${SECONDS}s: $(compgen -G 'sweeps/speed/*/metrics.json' | wc -l) point(s) written;" \
         "GPU $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)"
  done
  wait "$@" 2>/dev/null
}
summarize() {  # LINES: aggregate sweeps/speed and show the first LINES of its summary
  python3 -m automodel_spec.sweep sweeps/speed > "$RES/aggregate.log" 2>&1
  cat sweeps/speed/summary.md 2>/dev/null | head -"$1"
}
starts() {  # each server's start, memory sized (its first graph capture) and ready, from its log, by start
  python3 - sweeps/speed <<'PY'
import re, sys
from datetime import datetime
from pathlib import Path
stamp = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
rows = []
for log in Path(sys.argv[1]).rglob("server*.log"):
    times = {}
    for line in log.read_text(errors="replace").splitlines():
        m = stamp.match(line)
        if not m:
            continue
        t = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S")
        times.setdefault("start", t)
        low = line.lower()
        if "capture" in low and "graph begin" in low:
            times.setdefault("sized", t)
        if "ready to roll" in low:
            times.setdefault("ready", t)
    if times:
        rows.append((times["start"], times.get("sized"), times.get("ready"), log.parent.name))
rows.sort(key=lambda r: r[0])
t0 = rows[0][0] if rows else None
sec = lambda t: f"{(t - t0).total_seconds():6.0f}" if t else "     -"
print("[speed] server starts (s from the first): start, memory sized, ready, point")
for start, sized, ready, name in rows:
    print(f"[speed] {sec(start)} {sec(sized)} {sec(ready)}  {name}")
gated = all(b[0] >= a[1] for a, b in zip(rows, rows[1:]) if a[1] and a[2] and b[0] < a[2])
print(f"[speed] every start beside a booting server came after its memory was sized: {gated}")
PY
}
if [ "$STAGE" = shared ]; then
  # two servers on the GPU at once, started through the gate: flashinfer's baseline (measured by the
  # first point that needs it) and 7/1/8 (their two starts at once failed before the gate), and 5/1/6
  set -m
  ( sweep shared-a sglang.attention_backend=flashinfer spec.num_steps=7 spec.topk=1 ) &
  QA=$!
  ( sweep shared-b sglang.attention_backend=flashinfer spec.num_steps=5 spec.topk=1 ) &
  QB=$!
  await_queues 20 $QA $QB
  set +m
  starts
  summarize 40
  exit 0
fi

# two queues, one server each at a time: flashinfer's first start compiles its kernels (minutes), beside
# triton's servers; SGLang's choice and adaptive mode (whose 0.5.17 start needs its largest candidate,
# 7 steps) last. Finished points are skipped, so a later call continues where this one stopped.
set -m
( sweep flashinfer sglang.attention_backend=flashinfer spec.num_steps=3,7,5 spec.topk=1
  sweep flashinfer sglang.attention_backend=flashinfer spec.num_steps=3 spec.topk=8
  sweep choice sglang.attention_backend=triton spec.num_steps=null spec.topk=null ) &
Q1=$!
( sweep triton sglang.attention_backend=triton spec.num_steps=3,7,5 spec.topk=1
  sweep triton sglang.attention_backend=triton spec.num_steps=3 spec.topk=8
  sweep adaptive sglang.attention_backend=triton spec.adaptive=true spec.num_steps=7 spec.topk=1 ) &
Q2=$!
await_queues 30 $Q1 $Q2
set +m
du -sh ~/.cache/flashinfer ~/.triton 2>/dev/null | sed 's/^/[speed] kernel cache: /'
summarize 60
