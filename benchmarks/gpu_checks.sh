#!/usr/bin/env bash
# The prepared GPU checks, one script for a lent GPU machine (the tree copied there, its own
# python3 with torch/transformers; this package from src/). Writes logs under ${OUT:-gpu-out}/.
#   bash benchmarks/gpu_checks.sh
# 1. training tokens/s and MFU, ours (the trainer's own step) vs transformers, bf16, seq 2048:
#    160m, 410m, 1b shapes; generation for the memorization study (410m fp16, batch 1024)
# 2. memorization scoring: exact / generate vs transformers, 410m fp16, batch 1024
# 3. weights (checkpoint statistics) on the GPU, 160m shape
# 4. the analyses' GPU paths end to end: a quick demo trained on CUDA, then
#    pythia analyze --device cuda (val_loss, memorization, weights) and the gpu-marked tests
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PY:-python3}
step() { echo; echo "=== $* ($(date +%T))"; }
step device
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
step gpu_bench
timeout 300 $PY benchmarks/gpu_bench.py --out "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log"
if [ -f benchmarks/bench_memorization.py ]; then
  step memorization
  timeout 150 $PY benchmarks/bench_memorization.py --device cuda --size pythia-410m --dtype float16 --batch 1024 \
    --sequences 8192 --baseline-sequences 1024 2>&1 | tee "$OUT/memorization.log"
fi
if [ -f benchmarks/bench_weights.py ]; then
  step weights
  timeout 120 $PY benchmarks/bench_weights.py --device cuda 2>&1 | tee "$OUT/weights.log"
fi
step analyses on cuda
timeout 150 $PY -m pythia.cli demo --quick --out /tmp/gpu-demo --no-progress > "$OUT/demo.log" 2>&1; echo "demo rc $?"
tail -5 "$OUT/demo.log"
names=$($PY -m pythia.cli analyze --list | awk '{print $1}' | grep -xE 'val_loss|memorization|weights' | paste -sd,)
timeout 150 $PY -m pythia.cli analyze /tmp/gpu-demo "$names" --device cuda --force --no-progress 2>&1 | tail -5
$PY -m pythia.cli results /tmp/gpu-demo --format table 2>&1 | head -5
step gpu tests
timeout 120 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -5  # the image lacks zstandard: only this file
step done
