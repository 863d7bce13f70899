#!/usr/bin/env bash
# The prepared GPU checks, one script for a lent GPU machine (the tree copied there, its own
# python3 with torch/transformers; this package from src/). Writes logs under ${OUT:-gpu-out}/.
# It never runs past BUDGET seconds (default 450, under the 8 minutes a session may spend):
# each step gets what is left, up to its own cap, in the order of what it alone measures:
#   1. training tokens/s and MFU, every variant in one process (benchmarks/gpu_bench.py:
#      ours eager / compiled / micro-batch sizes / auto / CUDA graphs vs transformers eager and
#      compiled, bf16, seq 2048, 410m first, then 160m and 1b) within its own time budget
#   2. the gpu-marked tests: model vs transformers on CUDA, the compiled step, the step that
#      never waits for the GPU, train.micro_batch: auto, val_loss on CUDA
#   3. memorization scoring: exact / generate vs transformers, 410m fp16, batch 1024
#   4. weights (checkpoint statistics) on the GPU, 160m shape
#   5. the analyses' GPU paths end to end: a quick demo trained on CUDA, then
#      pythia analyze --device cuda (val_loss, memorization, weights)
#   6. generation for the memorization study (410m fp16, batch 1024) vs transformers
# Steps that find no time left say so ("skipped (budget spent)").
#   bash benchmarks/gpu_checks.sh              # on the GPU machine
#   bash benchmarks/gpu_checks.sh --dry-run    # the same sequence on CPU with tiny shapes (slow: it compiles)
set -uo pipefail
OUT=${OUT:-gpu-out}
BUDGET=${BUDGET:-450}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PY:-python3}
START=$SECONDS
step() { echo; echo "=== $* ($(date +%T), $((SECONDS - START)) s of $BUDGET)"; }
# run_for CAP CMD...: CMD under `timeout min(CAP, time left)`, or skipped when under 10 s remain
run_for() {
  local cap=$1 left=$((BUDGET - (SECONDS - START)))
  shift
  [ "$cap" -lt "$left" ] || cap=$left
  if [ "$cap" -lt 10 ]; then echo "skipped (budget spent): $*"; return 0; fi
  timeout "$cap" "$@"
}
if [ $DRY = 1 ]; then
  DEV=cpu; BENCH=(--cpu-smoke --no-extras); MEMO=(--smoke); GEN=(--cpu-smoke)
else
  DEV=cuda; BENCH=(); MEMO=(--size pythia-410m --dtype float16 --batch 1024 --sequences 8192 --baseline-sequences 1024)
  GEN=(--no-gen-nocache)
fi

step device
if [ $DRY = 1 ]; then echo "dry run on CPU ($(nproc) cores)"; else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
$PY -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"

step training: every variant, ours vs transformers
run_for 300 $PY benchmarks/gpu_bench.py "${BENCH[@]}" --sections training --budget 270 \
  --out "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log"

step gpu tests
# the image lacks zstandard: only this file
run_for 110 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -8

if [ -f benchmarks/bench_memorization.py ]; then
  step memorization
  run_for 60 $PY benchmarks/bench_memorization.py --device $DEV "${MEMO[@]}" 2>&1 | tee "$OUT/memorization.log"
fi
if [ -f benchmarks/bench_weights.py ]; then
  step weights
  [ $DRY = 1 ] && WSHAPE=(--shape pythia-14m --reps 1) || WSHAPE=()
  run_for 45 $PY benchmarks/bench_weights.py --device $DEV "${WSHAPE[@]}" 2>&1 | tee "$OUT/weights.log"
fi

step analyses on $DEV
run_for 100 $PY -m pythia.cli demo --quick --out /tmp/gpu-demo --no-progress > "$OUT/demo.log" 2>&1; echo "demo rc $?"
tail -3 "$OUT/demo.log"
names=$($PY -m pythia.cli analyze --list | awk '{print $1}' | grep -xE 'val_loss|memorization|weights' | paste -sd,)
run_for 90 $PY -m pythia.cli analyze /tmp/gpu-demo "$names" --device $DEV --force --no-progress 2>&1 | tail -5

step generation
run_for 60 $PY benchmarks/gpu_bench.py "${GEN[@]}" --sections generation 2>&1 | tee "$OUT/generation.log"
step done
