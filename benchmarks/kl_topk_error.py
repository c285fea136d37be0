"""How much of the dense model's distribution a baseline must keep for the KL divergence: the
error of the stored-reference KL against the exact full-vocabulary KL, both models in one process.

For each model (the fixture model; SmolLM2-135M when fetched) and pruning level (unstructured
magnitude sparsity of every decoder linear layer, as Wanda/SparseGPT-style 10-50% masks
give; structured MLP pruning of SmolLM2 at these ratios destroys it, KL > 5 nats), the exact
per-token KL(P_dense || Q) is computed from both models'
whole float64 log-softmax, and from the same logits (a) the product's estimate
(``device_divergence.dense_topk`` + ``token_divergence``: the k most likely dense tokens exactly plus
m draws from the rest) for several (k, m), and (b) the lower bound that merges the rest into
one outcome (what a top-k alone gives).  Errors: of the mean KL, and of the median and 99th
percentile over tokens.  Prints a table and writes ``benchmarks/results/kl_topk_error.json``.

    python benchmarks/kl_topk_error.py            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = ((8, 8), (16, 8), (16, 16), (32, 16))  # (k, m)
MERGED_KS = (16, 64)
RATIOS = (0.1, 0.3, 0.5)
SEQLEN = 256
WINDOWS = 12


def models() -> list[tuple[str, Path]]:
    from fixtures.get_smollm2 import is_ready, model_dir

    found = [("fixture tiny-llama", ROOT / "fixtures" / "tiny-llama")]
    if is_ready():
        found.append(("SmolLM2-135M", model_dir()))
    return found


def magnitude_sparsity(model, ratio: float) -> None:
    """Zero the ``ratio`` smallest-magnitude weights of each decoder linear layer, row by row."""
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                w = module.weight
                k = int(w.shape[1] * ratio)
                if k:
                    idx = w.abs().topk(k, dim=1, largest=False).indices
                    w.scatter_(1, idx, 0.0)


def _stats(x) -> dict:
    return {"mean": float(x.mean()), "median": float(x.median()), "p99": float(x.quantile(0.99))}


def _errors(exact, approx) -> dict:
    """Relative error of the mean, median and 99th percentile over tokens."""
    e, a = _stats(exact), _stats(approx)
    return {name: (a[name] - e[name]) / e[name] for name in e}


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl.measure.device_divergence import dense_topk, token_divergence, window_noise
    from pytest_llmppl.measure.divergence import bytes_per_token

    text = (ROOT / "fixtures" / "corpus" / "test.txt").read_text(encoding="utf-8")
    rows = []
    for name, path in models():
        tok = AutoTokenizer.from_pretrained(path)
        dense = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        ids = torch.tensor(tok(text, verbose=False)["input_ids"][: WINDOWS * SEQLEN]).view(-1, SEQLEN)
        with torch.inference_mode():
            p_logits = dense(ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        p_lp = torch.log_softmax(p_logits, -1)
        p_log = p_lp.double()
        p_ce = -p_lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        for ratio in RATIOS:
            pruned = copy.deepcopy(dense)
            magnitude_sparsity(pruned, ratio)
            with torch.inference_mode():
                q_logits = pruned(ids).logits[:, :-1].float()
            q_lp = torch.log_softmax(q_logits, -1)
            exact = (p_log.exp() * (p_log - q_lp.double())).sum(-1).flatten()
            q_ce = -q_lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            row = {"model": name, "vocab": p_logits.shape[-1], "sparsity": ratio, "tokens": exact.numel(),
                   "exact": _stats(exact), "sampled": {}, "merged_rest": {}}
            for k, m in CONFIGS:
                noise = torch.stack([window_noise(w, SEQLEN - 1, m) for w in range(WINDOWS)])
                ref = dense_topk(p_lp, p_logits, k, noise)
                q_at = q_lp.gather(-1, ref[0].long()), q_lp.gather(-1, ref[2].long())
                kl, _, _ = token_divergence(*q_at, q_logits, q_ce, *ref, p_ce)
                row["sampled"][f"k={k} m={m}"] = {**_errors(exact, kl.double().flatten()),
                                                  "bytes_per_100k_tokens": bytes_per_token(k, m) * 100_000}
            for k in MERGED_KS:
                top = p_log.topk(k, -1)
                q_top = q_lp.double().gather(-1, top.indices)
                p_rest = (1 - top.values.exp().sum(-1)).clamp_min(1e-30)
                q_rest = (1 - q_top.exp().sum(-1)).clamp_min(1e-30)
                merged = (top.values.exp() * (top.values - q_top)).sum(-1) + p_rest * (p_rest.log() - q_rest.log())
                row["merged_rest"][f"k={k}"] = {**_errors(exact, merged.flatten()),
                                                "bytes_per_100k_tokens": (8 * k + 8) * 100_000}
            rows.append(row)
            print(f"{name:20} sparsity {ratio:.0%}  exact mean KL {row['exact']['mean']:.5f}  " + "  ".join(
                f"{c}: {100 * v['mean']:+.2f}%" for c, v in {**row["sampled"], **{
                    "merged " + c: v for c, v in row["merged_rest"].items()}}.items()), flush=True)
    out = ROOT / "benchmarks" / "results" / "kl_topk_error.json"
    out.write_text(json.dumps({"seqlen": SEQLEN, "windows": WINDOWS, "rows": rows}, indent=1) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
