"""How fast a model is identified: GB/s of each hash path, and the cost of the attribute walk.

  cpu   xxh3-64 over the raw bytes (what the CPU path uses) vs the mixed word hash in torch ops
        (the accelerator's fallback), on 1 GiB of float32 and bfloat16, torch limited to one thread
  gpu   the one-pass Triton kernel vs the torch fallback on 6.5e9 bf16 weights (13 GB: Llama-2-7B)
  walk  the walk over a Llama-2-7B-shaped module tree (classes, attributes, hooks, config: everything
        but the weights' bytes), built on the meta device with its small tensors real; target 5 ms

    python benchmarks/bench_fingerprint.py --cases cpu [--json out.json]
    python benchmarks/bench_fingerprint.py --cases gpu --json out.json
    python benchmarks/bench_fingerprint.py --cases walk
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

    from pytest_llmppl.identity.device_hash import _torch_hash
    from pytest_llmppl.identity.tensors import tensor_hash

    torch.set_num_threads(1)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        t = torch.randn(2**30 // torch.finfo(dtype).bits * 8, dtype=torch.float32).to(dtype)
        size = t.numel() * t.element_size()
        for name, fn in (("xxh3 (cpu path)", lambda t=t: tensor_hash(t)),
                         ("mixed word hash, torch ops", lambda t=t: _torch_hash(t.view(torch.int32)))):
            s = _best_of(fn, 3 if "xxh3" in name else 1)
            rows.append({"device": "cpu, 1 thread", "dtype": str(dtype).replace("torch.", ""), "path": name,
                         "gib": size / 2**30, "seconds": s, "gb_per_s": size / s / 1e9})
    return rows


def gpu_rows() -> list[dict]:
    import torch

    from pytest_llmppl.identity.device_hash import Zeros, _torch_hash, _triton_hash, zeros_of

    t = torch.empty(6_500_000_000, dtype=torch.bfloat16, device="cuda").normal_()
    t[::7] = 0  # some zeros to count (and -0.0, which counts as zero)
    t[1::7] = -0.0
    words = t.view(torch.int32)
    size = t.numel() * 2
    bf16 = zeros_of(torch.bfloat16)
    kernel = _triton_hash(words, bf16)
    assert kernel == _torch_hash(words, bf16), "the kernel and its torch fallback disagree"
    assert kernel[1] == t.numel() - int(torch.count_nonzero(t)), "zero count differs from count_nonzero"
    rows = []
    candidates = (("triton kernel, hash + zeros (now)", lambda: _triton_hash(words, bf16)),
                  ("triton kernel, hash only", lambda: _triton_hash(words, Zeros())),
                  ("torch fallback, hash + zeros", lambda: _torch_hash(words, bf16)))
    for name, fn in candidates:
        fn()
        torch.cuda.synchronize()
        s = _best_of(lambda fn=fn: (fn(), torch.cuda.synchronize()), 1 if "fallback" in name else 5)
        rows.append({"device": torch.cuda.get_device_name(0), "dtype": "bfloat16", "path": name, "gib": size / 2**30,
                     "seconds": s, "gb_per_s": size / s / 1e9})
    return rows


def walk_rows() -> list[dict]:
    """The identity walk without the weights' bytes, at the Llama-2-7B shape (meta weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_llmppl.identity.fingerprint import digest
    from pytest_llmppl.identity.model_identity import _tree
    from pytest_llmppl.identity.value_description import Describer

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.model.rotary_emb = type(model.model.rotary_emb)(config)  # its small tensors real (on the CPU)

    def walk() -> str:  # as model_identity does it, without the weights: one describer, the config in it
        describe = Describer(config=model.config)
        return digest(describe.config_description, _tree(model, describe))

    walk()  # warm: the classes' source and bytecode caches
    s = _best_of(walk, 20)
    modules = sum(1 for _ in model.modules())
    return [{"device": "cpu", "dtype": "-", "path": f"walk + digest, {modules} modules", "gib": 0.0, "seconds": s,
             "gb_per_s": 0.0}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", choices=["cpu", "gpu", "walk"], default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rows = {"cpu": cpu_rows, "gpu": gpu_rows, "walk": walk_rows}[args.cases]()
    print(f"{'device':22s} {'dtype':9s} {'path':34s} {'GiB':>6s} {'s':>8s} {'GB/s':>8s}")
    for r in rows:
        print(f"{r['device']:22s} {r['dtype']:9s} {r['path']:34s} {r['gib']:6.2f} {r['seconds']:8.4f} "
              f"{r['gb_per_s']:8.2f}")
    if args.json:
        import torch

        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
