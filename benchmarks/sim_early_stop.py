"""Simulation study of the early verdict (stats.EarlyDecision) against the full evaluation.

For each case (a baseline and a candidate per-window NLL vector over N windows) and each
run: a random window order and a random threshold placed at a distance of U(-12, 12)
"full-corpus standard errors" (SE_full = sd(d) / sqrt(N), d the paired differences) from
the candidate's exact ln PPL.  The early rule is run to its verdict; it is wrong when it
differs from the full evaluation's verdict.  Cases:

- real: the fixture model (seqlen 128, 140 windows) against copies pruned by the
  torch-pruning helper (6.25%, 12.5%, 25%) and with seeded weight noise;
- synthetic worst cases: heavy-tailed differences (Student t, 2 and 1.5 degrees of freedom,
  i.e. infinite variance), drift along the corpus (differences that grow from the first
  window to the last), a few huge outlier windows, skewed damage (lognormal, sigma 1 and 1.5:
  a few windows carry most of it).

A second study puts the threshold where the rule is tested hardest: at fixed distances of
-1, -0.5, -0.25, 0.25, 0.5 and 1 full-corpus SE from the truth (negative: FAIL is right),
``--near-runs`` runs each, and reports each case's worst error rate at 0.99.

    python benchmarks/sim_early_stop.py [--runs 2000] [--near-runs 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_llmppl.judge.stats import EarlyDecision  # noqa: E402


def real_cases(seqlen: int = 128):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl.measure.engine import evaluate_ids
    from pytest_llmppl.pruning import prune_causal_lm

    tiny = ROOT / "fixtures" / "tiny-llama"
    tok = AutoTokenizer.from_pretrained(tiny)
    ids = tok((ROOT / "fixtures" / "corpus" / "test.txt").read_text(encoding="utf-8"), verbose=False)["input_ids"]
    dense = AutoModelForCausalLM.from_pretrained(tiny).eval()
    def means(model):  # per-window mean NLL per position (window_nll = mean CE x seqlen)
        return [x / seqlen for x in evaluate_ids(model, ids, seqlen=seqlen).window_nll]

    base = means(dense)
    cases = {}
    for ratio in (0.0625, 0.125, 0.25):
        pruned = prune_causal_lm(dense, ratio, copy_model=True)
        cases[f"fixture pruned {ratio:g}"] = (base, means(pruned), seqlen)
    for amount in (0.1, 0.3):
        noisy = AutoModelForCausalLM.from_pretrained(tiny).eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in noisy.model.layers:
                for m in layer.modules():
                    if isinstance(m, torch.nn.Linear):
                        m.weight.add_(torch.randn(m.weight.shape, generator=g) * amount * m.weight.std())
        cases[f"fixture noise {amount:g}"] = (base, means(noisy), seqlen)
    return cases


def synthetic_cases(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    cases = {}
    for n in (83, 300):
        b = rng.normal(2.0, 0.3, n)
        for df in (2.0, 1.5):
            cases[f"t(df={df:g}) tails, N={n}"] = (b.tolist(), (b + 0.05 + 0.02 * rng.standard_t(df, n)).tolist(), 1)
        cases[f"drift 0->0.2, N={n}"] = (b.tolist(), (b + 0.2 * np.arange(n) / n + rng.normal(0, 0.01, n)).tolist(), 1)
        outl = b + 0.03 + rng.normal(0, 0.01, n)
        outl[rng.choice(n, 3, replace=False)] += 2.0
        cases[f"3 outlier windows, N={n}"] = (b.tolist(), outl.tolist(), 1)
    for n in (83, 140, 300):
        b = rng.normal(2.0, 0.3, n)
        for sigma in (1.0, 1.5):
            cases[f"lognormal s={sigma:g}, N={n}"] = (b.tolist(), (b + 0.01 * rng.lognormal(0, sigma, n)).tolist(), 1)
    return cases


def simulate(base, cand, weight, runs: int, confidence: float, seed: int = 1, at: float | None = None):
    n = len(base)
    w = [weight] * n
    d = [c - b for b, c in zip(base, cand)]
    mean_b = sum(base) / n
    mean_c = sum(cand) / n
    md = sum(d) / n
    sd = math.sqrt(sum((x - md) ** 2 for x in d) / (n - 1))
    se_full = sd / math.sqrt(n)
    rng = random.Random(seed)
    out = []
    for _ in range(runs):
        dist = rng.uniform(-12, 12) if at is None else at  # threshold - true, in SE_full units
        ln_t = mean_c + dist * se_full
        rule = EarlyDecision({i: base[i] * weight for i in range(n)}, dict.fromkeys(range(n), weight),
                             math.exp(ln_t), confidence)
        order = list(range(n))
        rng.shuffle(order)
        for k in range(1, n + 1):
            done = order[:k]
            if rule.update(done, [cand[i] * w[i] for i in done]) is not None:
                break
        truth = "pass" if mean_c <= ln_t else "fail"
        out.append((dist, rule.verdict == truth, rule.decided_at / n))
    return out, mean_b, se_full


NEAR = (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0)


def summarize(name, n, results, confidence):
    wrong = sum(1 for _, ok, _ in results if not ok)
    far = [f for dist, _, f in results if abs(dist) > 1]
    bins = {}
    for lo, hi in ((1, 2), (2, 4), (4, 8), (8, 12)):
        sel = [f for dist, _, f in results if lo < abs(dist) <= hi]
        bins[f"{lo}-{hi}"] = sum(sel) / len(sel) if sel else None
    return {"case": name, "N": n, "confidence": confidence, "runs": len(results), "wrong": wrong,
            "error_rate": wrong / len(results), "mean_fraction": sum(f for *_, f in results) / len(results),
            "mean_fraction_beyond_1se": sum(far) / len(far), "fraction_by_distance_se": bins}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--json")
    ap.add_argument("--near-runs", type=int, default=1000)
    ap.add_argument("--no-real", action="store_true", help="synthetic cases only (no model runs)")
    args = ap.parse_args(argv)
    t0 = time.time()
    cases = {} if args.no_real else real_cases()
    cases.update(synthetic_cases())
    rows = []
    for confidence in (0.99, 0.95):
        for name, (base, cand, weight) in cases.items():
            results, _, _ = simulate(base, cand, weight, args.runs, confidence)
            rows.append(summarize(name, len(base), results, confidence))
    head = f"{'case':28s} {'N':>4s} {'conf':>5s} {'runs':>5s} {'wrong':>5s} {'err%':>6s} {'frac':>5s} " \
           f"{'>1SE':>5s} {'1-2':>5s} {'2-4':>5s} {'4-8':>5s} {'8-12':>5s}"
    print(head)
    for r in rows:
        b = r["fraction_by_distance_se"]
        print(f"{r['case']:28s} {r['N']:4d} {r['confidence']:5.2f} {r['runs']:5d} {r['wrong']:5d} "
              f"{100 * r['error_rate']:6.2f} {r['mean_fraction']:5.2f} {r['mean_fraction_beyond_1se']:5.2f} "
              + " ".join(f"{b[k]:5.2f}" if b[k] is not None else "    -" for k in ("1-2", "2-4", "4-8", "8-12")))
    total = {c: sum(r["wrong"] for r in rows if r["confidence"] == c)
             / sum(r["runs"] for r in rows if r["confidence"] == c) for c in (0.99, 0.95)}
    print(f"\noverall error rate: {100 * total[0.99]:.3f}% at 0.99, {100 * total[0.95]:.3f}% at 0.95 "
          f"({time.time() - t0:.0f} s)")
    near = []
    print(f"\nnear the threshold, 0.99, {args.near_runs} runs per distance: worst error rate per case")
    for name, (base, cand, weight) in cases.items():
        rates = {}
        for at in NEAR:
            results, _, _ = simulate(base, cand, weight, args.near_runs, 0.99, at=at)
            rates[at] = sum(1 for _, ok, _ in results if not ok) / len(results)
        worst_at = max(rates, key=rates.get)
        near.append({"case": name, "N": len(base), "runs_per_distance": args.near_runs, "error_by_distance_se": rates,
                     "worst": rates[worst_at], "worst_at": worst_at})
        print(f"{name:28s} {len(base):4d}  worst {100 * rates[worst_at]:5.2f}% at {worst_at:+g} SE  "
              + " ".join(f"{at:+g}:{100 * r:.2f}" for at, r in rates.items()), flush=True)
    print(f"worst over all cases and distances: {100 * max(r['worst'] for r in near):.2f}%")
    if args.json:
        summary = {"date": time.strftime("%Y-%m-%d"), "rows": rows, "overall": total, "near": near}
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
