"""How fast weights are fingerprinted: GB/s of each hash path, one thread on the CPU.

  cpu  xxh3-64 over the raw bytes (what the CPU path uses) vs the integer hash in torch ops
       (what it used before), on 1 GiB of float32 and bfloat16, torch limited to one thread
  gpu  the one-pass Triton kernel vs the torch fallback on 7e9 bf16 elements (a 7B model's weights)

    python benchmarks/bench_fingerprint.py --cases cpu [--json out.json]
    python benchmarks/bench_fingerprint.py --cases gpu --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_rows() -> list[dict]:
    import torch

    from pytest_llmppl.device_hash import _torch_hash
    from pytest_llmppl.fingerprint import tensor_hash

    torch.set_num_threads(1)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        t = torch.randn(2**30 // torch.finfo(dtype).bits * 8, dtype=torch.float32).to(dtype)
        size = t.numel() * t.element_size()
        width = {2: torch.int16, 4: torch.int32}[t.element_size()]
        for name, fn in (("xxh3 (now)", lambda t=t: tensor_hash(t)),
                         ("torch integer hash (before)", lambda t=t, w=width: _torch_hash(t.view(w)))):
            s = _best_of(fn, 3 if "xxh3" in name else 1)
            rows.append({"device": "cpu, 1 thread", "dtype": str(dtype).replace("torch.", ""), "path": name,
                         "gib": size / 2**30, "seconds": s, "gb_per_s": size / s / 1e9})
    return rows


def gpu_rows() -> list[dict]:
    import torch

    from pytest_llmppl.device_hash import _torch_hash, _triton_hash

    t = torch.empty(7 * 10**9, dtype=torch.bfloat16, device="cuda").normal_()
    bits = t.view(torch.int16)
    size = t.numel() * 2
    assert _triton_hash(bits) == _torch_hash(bits)
    rows = []
    candidates = (("triton kernel (now)", lambda: _triton_hash(bits)), ("torch fallback", lambda: _torch_hash(bits)))
    for name, fn in candidates:
        fn()
        torch.cuda.synchronize()
        s = _best_of(lambda fn=fn: (fn(), torch.cuda.synchronize()))
        rows.append({"device": torch.cuda.get_device_name(0), "dtype": "bfloat16", "path": name, "gib": size / 2**30,
                     "seconds": s, "gb_per_s": size / s / 1e9})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rows = cpu_rows() if args.cases == "cpu" else gpu_rows()
    print(f"{'device':22s} {'dtype':9s} {'path':28s} {'GiB':>6s} {'s':>8s} {'GB/s':>8s}")
    for r in rows:
        print(f"{r['device']:22s} {r['dtype']:9s} {r['path']:28s} {r['gib']:6.2f} {r['seconds']:8.3f} "
              f"{r['gb_per_s']:8.2f}")
    if args.json:
        import torch

        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
