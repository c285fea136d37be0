#!/usr/bin/env bash
# One device call: engine benchmark at the three GPU shapes, then the plugin cold/warm run
# with a Llama-2-7B-shaped model: baseline + check (ratio 0), and baseline + prune 20% + check.  Results land in $OUT (or ./bench-out).
set -uo pipefail
OUT=${OUT:-bench-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 benchmarks/bench_engine.py --cases gpu --json "$OUT/engine_gpu.json" 2>&1 | grep -v "Loading weights" | tee "$OUT/engine_gpu.txt"
python3 benchmarks/bench_plugin.py --shape llama-2-7b --device cuda --ratio 0 --json "$OUT/plugin_gpu_check.json" 2>&1 | tee "$OUT/plugin_gpu_check.txt"
python3 benchmarks/bench_plugin.py --shape llama-2-7b --device cuda --ratio 0.2 --json "$OUT/plugin_gpu.json" 2>&1 | tee "$OUT/plugin_gpu.txt"
