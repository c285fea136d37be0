"""Cost of what a check keeps beyond the PPL, the engine alone, same model and tokens, alternating
runs, GPU time (synchronized wall clock):

- check: per-token argmax (top-1 agreement) vs argmax + KL divergence against a dense reference
- baseline: per-token argmax vs argmax + the dense top-16 and 16 draws from the rest (what KL needs)

    python benchmarks/bench_top1.py --shape llama-3-8b --json out.json      # on a GPU
    python benchmarks/bench_top1.py --shape small-gqa-32k --device cpu       # the same on the CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

REPEATS = 3


def main(argv=None) -> int:
    import torch
    from bench_engine import CPU_SHAPES, GPU_SHAPES, build

    from pytest_llmppl.measure.divergence import TOP_K
    from pytest_llmppl.measure.engine import evaluate_ids

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3-8b")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    shape = {**GPU_SHAPES, **CPU_SHAPES}[args.shape]
    device = torch.device(args.device)
    model = build(shape, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ids = torch.randint(0, shape["vocab_size"], (shape["windows"] * shape["seqlen"],),
                        generator=torch.Generator().manual_seed(1)).numpy()
    seqlen = shape["seqlen"]
    dense = evaluate_ids(model, ids, seqlen=seqlen, want_argmax=True, keep_topk=TOP_K)  # the reference (and warm-up)
    cases = {
        "check: argmax (before)": dict(want_argmax=True),
        "check: argmax + KL": dict(want_argmax=True, reference=dense.topk),
        "baseline: argmax (before)": dict(want_argmax=True),
        "baseline: argmax + top-k reference": dict(want_argmax=True, keep_topk=TOP_K),
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(REPEATS):
        for name, kwargs in cases.items():
            sync()
            t0 = time.perf_counter()
            evaluate_ids(model, ids, seqlen=seqlen, **kwargs)
            sync()
            seconds[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    rows = []
    for before, after in (("check: argmax (before)", "check: argmax + KL"),
                          ("baseline: argmax (before)", "baseline: argmax + top-k reference")):
        rows.append({"case": after, "before_s": median[before], "after_s": median[after],
                     "extra_pct": 100 * (median[after] / median[before] - 1), "runs": seconds[after]})
        print(f"{args.shape}  {after:36}  {median[before]:.3f} s -> {median[after]:.3f} s  "
              f"({rows[-1]['extra_pct']:+.1f}%, median of {REPEATS})", flush=True)
    if args.json:
        where = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        info = {"device": where, "torch": torch.__version__, "shape": args.shape,
                "windows": shape["windows"], "seqlen": seqlen, "date": time.strftime("%Y-%m-%d")}
        Path(args.json).write_text(json.dumps({**info, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
