"""Engine vs the Torch-Pruning reference loop, in one process, on the same model and tokens.

Prints a table (seconds, tokens/s, TFLOP/s, peak memory above weights, PPL of each and
their relative difference) and writes JSON.  Cases:

  cpu   the fixture model and two small random configs (float32)
  gpu   random-init Llama-3.2-1B (140 x 2048), Llama-2-7B (83 x 4096), Llama-3-8B (70 x 4096), bf16

    python benchmarks/bench_engine.py --cases cpu [--json out.json]
    python benchmarks/bench_engine.py --cases gpu --json out.json

The reference is Torch-Pruning's ``eval_ppl_wikitext`` written from its formula: batch 1,
full logits, CE on the model-dtype logits, ``loss.float() * seqlen``.  "decoder" times the
decoder alone (no lm_head, no loss): the floor any loss implementation sits on.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GPU_SHAPES = {
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, windows=140, seqlen=2048,
                         tie_word_embeddings=True),
    "llama-2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, head_dim=128, windows=83, seqlen=4096),
    "llama-3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, windows=70, seqlen=4096),
}
CPU_SHAPES = {
    "small-mha": dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, head_dim=32, windows=24, seqlen=512),
    "small-gqa-32k": dict(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=2, head_dim=32, windows=16, seqlen=512),
}


def reference_loop(model, ids, seqlen, upcast=False):
    """Torch-Pruning's eval_ppl_wikitext, bs=1 (``upcast``: CE on float32 logits)."""
    import torch
    import torch.nn as nn

    ids = ids.view(1, -1)
    n = ids.numel() // seqlen
    nlls = []
    with torch.no_grad():
        for i in range(n):
            x = ids[:, i * seqlen:(i + 1) * seqlen]
            lm_logits = model(x, use_cache=False).logits
            lm_logits = lm_logits.float() if upcast else lm_logits
            shift_logits = lm_logits[:, :-1, :].contiguous()
            loss = nn.CrossEntropyLoss()(shift_logits.reshape(-1, shift_logits.size(-1)), x[:, 1:].reshape(-1))
            nlls.append(loss.float() * seqlen)
    return math.exp(torch.stack(nlls).sum().item() / (n * seqlen))


def decoder_only(model, ids, seqlen):
    import torch

    ids = ids.view(1, -1)
    with torch.no_grad():
        for i in range(ids.numel() // seqlen):
            model.model(ids[:, i * seqlen:(i + 1) * seqlen], use_cache=False)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, weights_bytes):
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - weights_bytes) if device.type == "cuda" else None
    return out, seconds, peak


def flops(cfg, tokens, seqlen):
    """2 x matmul params per token + causal attention (2 x seqlen x heads*head_dim per layer)."""
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    hd = cfg.head_dim
    attn = h * (cfg.num_attention_heads * hd) * 2 + h * (cfg.num_key_value_heads * hd) * 2
    per_token = 2 * (layers * (attn + 3 * h * inter) + h * cfg.vocab_size)
    per_token += layers * 2 * seqlen * cfg.num_attention_heads * hd
    return per_token * tokens


def build(shape: dict, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    params = {k: v for k, v in shape.items() if k not in ("windows", "seqlen")}
    cfg = LlamaConfig(max_position_embeddings=max(4096, shape["seqlen"]), **params)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval()


def run_case(name, model, ids, seqlen, device, repeats=1, engine_only=False):
    from pytest_llmppl.measure.engine import evaluate_ids
    from pytest_llmppl.measure.perplexity_result import ppl_from

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens = (ids.numel() // seqlen) * seqlen
    f = flops(model.config, tokens, seqlen)
    rows = []
    dev_ids = ids.to(device)
    # warm-up: kernels, allocator, autotuning
    evaluate_ids(model, ids[: seqlen * 2].numpy(), seqlen=seqlen, batch_size=1)
    reference_loop(model, dev_ids[: seqlen * 2], seqlen)
    cases = [("engine", lambda: evaluate_ids(model, ids.numpy(), seqlen=seqlen, batch_size="auto"))]
    if not engine_only:
        cases += [("reference", lambda: reference_loop(model, dev_ids, seqlen)),
                  ("reference-fp32-ce", lambda: reference_loop(model, dev_ids, seqlen, upcast=True)),
                  ("decoder", lambda: decoder_only(model, dev_ids, seqlen))]
    results = {}
    for label, fn in cases:
        best = None
        for _ in range(repeats):
            out, sec, peak = timed(fn, device, weights)
            if best is None or sec < best[1]:
                best = (out, sec, peak)
        out, sec, peak = best
        ppl = None
        batch = 1
        if label == "engine":
            ppl, batch = ppl_from(out.window_nll, out.window_weight), out.batch_size
        elif label.startswith("reference"):
            ppl = out
        results[label] = (sec, peak, ppl, batch)
    # bf16 models: compare with the reference that also computes CE in float32; the plain
    # reference's CE on bf16 logits carries its own rounding (reported too).
    ref_key = "reference-fp32-ce" if device.type == "cuda" else "reference"
    ref_ppl = results.get(ref_key, (None, None, None, None))[2]
    for label, (sec, peak, ppl, batch) in results.items():
        rows.append({
            "case": name, "run": label, "batch": batch, "seconds": round(sec, 4),
            "tokens_per_s": round(tokens / sec), "tflops": round(f / sec / 1e12, 1),
            "peak_above_weights_gib": None if peak is None else round(peak / 2**30, 3),
            "ppl": ppl, "rel_diff_vs_reference": (abs(ppl - ref_ppl) / ref_ppl) if ppl and ref_ppl else None,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "device": str(device),
            "windows": ids.numel() // seqlen, "seqlen": seqlen,
        })
    return rows


def cpu_cases(quick: bool = False):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device("cpu")
    tiny = ROOT / "fixtures" / "tiny-llama"
    tok = AutoTokenizer.from_pretrained(tiny)
    text = (ROOT / "fixtures" / "corpus" / "test.txt").read_text(encoding="utf-8")
    ids = torch.tensor(tok(text, verbose=False)["input_ids"])
    rows = run_case("fixture tiny-llama", AutoModelForCausalLM.from_pretrained(tiny).eval(), ids, 256, device,
                    repeats=1 if quick else 3)
    for name, shape in ({} if quick else CPU_SHAPES).items():
        model = build(shape, device, torch.float32)
        gen = torch.Generator().manual_seed(1)
        rand = torch.randint(0, shape["vocab_size"], (shape["windows"] * shape["seqlen"],), generator=gen)
        rows += run_case(name, model, rand, shape["seqlen"], device)
    return rows


def gpu_cases(only=None):
    import torch

    device = torch.device("cuda")
    rows = []
    for name, shape in GPU_SHAPES.items():
        if only and name not in only:
            continue
        model = build(shape, device, torch.bfloat16)
        gen = torch.Generator().manual_seed(1)
        rand = torch.randint(0, shape["vocab_size"], (shape["windows"] * shape["seqlen"],), generator=gen)
        rows += run_case(name, model, rand, shape["seqlen"], device)
        del model
        gc.collect()
        torch.cuda.empty_cache()
        print(format_table(rows), flush=True)
    return rows


def format_table(rows) -> str:
    cols = ["case", "run", "batch", "seconds", "tokens_per_s", "tflops", "peak_above_weights_gib", "ppl",
            "rel_diff_vs_reference"]
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}" if v < 1e4 else f"{v:.1f}"
        return "-" if v is None else str(v)
    table = [cols] + [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--only", nargs="*", help="GPU shapes to run")
    ap.add_argument("--quick", action="store_true", help="CPU: the fixture model only, one repeat (CI)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import torch

    rows = cpu_cases(args.quick) if args.cases == "cpu" else gpu_cases(args.only)
    machine = torch.cuda.get_device_name() if args.cases == "gpu" else platform.processor() or platform.machine()
    print(f"\n{time.strftime('%Y-%m-%d')}  {machine}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine,
                                               "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
