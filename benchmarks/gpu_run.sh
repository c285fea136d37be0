#!/usr/bin/env bash
# One device call: the CUDA-only tests, the fingerprint and verdict benchmarks at the Llama-2-7B
# shape, and the example suite on the GPU (refreshing examples/ppl-baselines-gpu.json, then the
# strict run the GPU workflow makes, twice: the second is served from the cache).  Results in $OUT.
set -uo pipefail
OUT=${OUT:-bench-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q -e . --no-deps --no-build-isolation 2>&1 | tail -1  # the pytest11 entry point (pytester)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_fused_ce.py tests/test_fingerprint.py \
  tests/test_state_and_unknowns.py tests/test_hooks_identity.py tests/test_model_identity.py 2>&1 | tail -3 \
  | tee "$OUT/cuda_tests.txt"
python3 benchmarks/bench_fingerprint.py --cases gpu --json "$OUT/fingerprint_gpu.json" 2>&1 | tee "$OUT/fingerprint_gpu.txt"
python3 benchmarks/bench_fingerprint.py --cases walk 2>&1 | tail -1 | tee -a "$OUT/fingerprint_gpu.txt"
python3 benchmarks/bench_verdict.py --shape llama-2-7b --device cuda --json "$OUT/verdict_gpu.json" 2>&1 \
  | grep -v "Loading weights" | tee "$OUT/verdict_gpu.txt"
run_examples() { python3 -m pytest examples --ppl-budget=10 --ppl-device=cuda \
  --ppl-baselines=examples/ppl-baselines-gpu.json --ppl-cache-dir=/tmp/llmppl-cache -W ignore::UserWarning "$@"; }
run_examples --ppl-update-baselines 2>&1 | tail -12 | tee "$OUT/examples_gpu.txt"
run_examples --ppl-strict --ppl-report=/tmp/r1.json 2>&1 | tail -9 | tee -a "$OUT/examples_gpu.txt"
run_examples --ppl-strict --ppl-report="$OUT/examples_gpu_report.json" 2>&1 | tail -9 | tee -a "$OUT/examples_gpu.txt"
cp examples/ppl-baselines-gpu.json "$OUT/"
