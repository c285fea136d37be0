"""Cost of top-1 agreement: the engine with and without per-token argmax, same model and tokens.

    python benchmarks/bench_top1.py --shape llama-3-8b      # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    import torch
    from bench_engine import GPU_SHAPES, build

    from pytest_llmppl.engine import evaluate_ids

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3-8b")
    args = ap.parse_args(argv)
    shape = GPU_SHAPES[args.shape]
    model = build(shape, torch.device("cuda"), torch.bfloat16)
    ids = torch.randint(0, shape["vocab_size"], (shape["windows"] * shape["seqlen"],),
                        generator=torch.Generator().manual_seed(1)).numpy()
    evaluate_ids(model, ids[: 2 * shape["seqlen"]], seqlen=shape["seqlen"], want_argmax=True)
    for want in (False, True, False, True):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        evaluate_ids(model, ids, seqlen=shape["seqlen"], want_argmax=want)
        torch.cuda.synchronize()
        print(f"{args.shape}  top1={want!s:5}  {time.perf_counter() - t0:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
