"""``prune_causal_lm`` at real shapes: how long torch-pruning takes, what is left, and that it runs.

For each shape (random-init Llama weights at the real config, bf16 on CUDA or float32 on
the CPU) it prunes a deep copy at ``--ratio`` with the helper, then checks what the issue
asks of a GQA prune: heads kept whole and evenly shared by the KV heads, the config
matching the modules, and a forward that runs and gives finite logits.  Prints a table
and writes JSON.

    python benchmarks/bench_prune.py --shapes small-mha,small-gqa-32k          # CPU, seconds
    python benchmarks/bench_prune.py --shapes llama-3.2-1b,llama-2-7b,llama-3-8b --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def layout(model) -> dict:
    cfg = model.config
    attn = model.model.layers[0].self_attn
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {"params_M": sum(p.numel() for p in model.parameters()) / 1e6, "hidden": cfg.hidden_size,
            "intermediate": cfg.intermediate_size, "heads": attn.q_proj.out_features // head_dim,
            "kv_heads": attn.k_proj.out_features // head_dim, "config_heads": cfg.num_attention_heads,
            "config_kv_heads": cfg.num_key_value_heads}


def run_shape(name: str, shape: dict, device: str, ratio: float) -> dict:
    import torch
    from bench_engine import build

    from pytest_llmppl.pruning import prune_causal_lm

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build(shape, device, dtype)
    before = layout(model)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    pruned = prune_causal_lm(model, ratio, copy_model=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    after = layout(pruned)
    ids = torch.randint(0, shape["vocab_size"], (1, 256), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        logits = pruned(ids, use_cache=False).logits
    ok = (after["heads"] == after["config_heads"] and after["kv_heads"] == after["config_kv_heads"]
          and after["heads"] % after["kv_heads"] == 0 and after["hidden"] % after["heads"] == 0
          and bool(torch.isfinite(logits.float()).all()))
    row = {"shape": name, "ratio": ratio, "prune_s": seconds, "before": before, "after": after, "runs_ok": ok,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
    del model, pruned, logits
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def format_table(rows: list[dict]) -> str:
    lines = [f"{'shape':16s} {'prune s':>8s} {'params M':>17s} {'hidden':>11s} {'mlp':>13s} {'heads/kv':>13s} runs"]
    for r in rows:
        b, a = r["before"], r["after"]
        lines.append(f"{r['shape']:16s} {r['prune_s']:8.2f} {b['params_M']:7.1f} → {a['params_M']:7.1f} "
                     f"{b['hidden']:>4d} → {a['hidden']:<4d} {b['intermediate']:>5d} → {a['intermediate']:<5d} "
                     f"{b['heads']:>2d}/{b['kv_heads']:<2d} → {a['heads']:>2d}/{a['kv_heads']:<2d} "
                     f"{'ok' if r['runs_ok'] else 'FAILED'}")
    return "\n".join(lines)


def main() -> int:
    import torch
    import transformers
    from bench_engine import CPU_SHAPES, GPU_SHAPES

    shapes = {**CPU_SHAPES, **GPU_SHAPES}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small-mha,small-gqa-32k", help=f"comma list of {', '.join(shapes)}")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for name in args.shapes.split(","):
        rows.append(run_shape(name, shapes[name], args.device, args.ratio))
        print(format_table(rows[-1:]), flush=True)
    from pytest_llmppl.identity.spec import package_version  # torch_pruning.__version__ lags its release

    meta = {"device": args.device, "ratio": args.ratio, "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_pruning": package_version("torch-pruning"),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor()}
    print(f"\nprune_causal_lm at ratio {args.ratio} on {meta['gpu'] or args.device} "
          f"(torch {meta['torch']}, transformers {meta['transformers']}, torch-pruning {meta['torch_pruning']})")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return 0 if all(r["runs_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
