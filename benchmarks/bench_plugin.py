"""Cold and warm runs of a baseline + prune + check test through the plugin.

The suite (written to a temp dir) builds a seeded random Llama from a config (same
weights every run, so the baseline's fingerprint is stable), takes its baseline,
prunes a copy with the torch-pruning helper and checks it.  The first run measures
the baseline and tokenizes; the second serves both from the cache.

    python benchmarks/bench_plugin.py --shape tiny            # CPU, a few seconds
    python benchmarks/bench_plugin.py --shape llama-2-7b --device cuda --ratio 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

SUITE = '''
import json, os, time, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

SHAPE = json.loads(os.environ["BENCH_SHAPE"])
DEVICE = os.environ["BENCH_DEVICE"]


def test_pruned_within_budget(ppl_baseline, ppl_pruned, ppl_check):
    tok = AutoTokenizer.from_pretrained(os.environ["BENCH_TOKENIZER"])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(DEVICE):
        model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=4096, **SHAPE))
    model = model.to(torch.bfloat16 if DEVICE == "cuda" else torch.float32).eval()
    t1 = time.perf_counter()
    base = ppl_baseline(model, tok)
    t2 = time.perf_counter()
    pruned = ppl_pruned(model, float(os.environ["BENCH_RATIO"]))
    t3 = time.perf_counter()
    ppl_check(pruned, tok, baseline=base, budget="1000%")
    t4 = time.perf_counter()
    json.dump({"build": t1 - t0, "baseline": t2 - t1, "prune": t3 - t2, "check": t4 - t3,
               "baseline_source": base.source}, open(os.environ["BENCH_TIMES"], "w"))
'''


def _load_plugin() -> list[str]:
    """``-p pytest_llmppl.plugin`` where the package is not installed (a bare checkout)."""
    from importlib.metadata import entry_points

    installed = any(ep.value == "pytest_llmppl.plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_llmppl.plugin"]


def main(argv=None) -> int:
    from bench_engine import GPU_SHAPES

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    shapes = {"tiny": dict(vocab_size=1024, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                           num_attention_heads=6, num_key_value_heads=6, head_dim=64, windows=0, seqlen=512),
              **GPU_SHAPES}
    shape = dict(shapes[args.shape])
    seqlen = shape.pop("seqlen")
    shape.pop("windows")
    work = Path(tempfile.mkdtemp(prefix="llmppl-bench-"))
    (work / "test_bench.py").write_text(SUITE)
    corpus = work / "corpus.txt"
    rows = [json.loads(line)["text"] for line in (ROOT / "fixtures" / "corpus" / "train.jsonl").open(encoding="utf-8")]
    corpus.write_text("\n\n".join(rows[: len(rows) // (1 if args.device == "cuda" else 8)]), encoding="utf-8")
    env = {**os.environ, "BENCH_SHAPE": json.dumps(shape), "BENCH_DEVICE": args.device, "BENCH_RATIO": str(args.ratio),
           "BENCH_TOKENIZER": str(ROOT / "fixtures" / "tiny-llama"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = []
    for run in ("cold", "warm"):
        env["BENCH_TIMES"] = str(work / f"{run}.json")
        cmd = [sys.executable, "-m", "pytest", "-q", *_load_plugin(), str(work / "test_bench.py"),
               f"--ppl-corpus={corpus}", f"--ppl-seqlen={seqlen}", f"--ppl-cache-dir={work / 'cache'}",
               f"--ppl-device={args.device}", "-W", "ignore::UserWarning", "--rootdir", str(work)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            print(p.stdout[-4000:], p.stderr[-4000:])
            return 1
        times = json.loads((work / f"{run}.json").read_text())
        out.append({"run": run, "wall_s": round(wall, 2), **{k: (round(v, 3) if isinstance(v, float) else v)
                                                              for k, v in times.items()}})
        print(p.stdout.strip().splitlines()[-3] if p.stdout else "")
    speedup = out[0]["wall_s"] / out[1]["wall_s"]
    print(f"\nplugin cold vs warm: shape {args.shape}, device {args.device}, prune ratio {args.ratio}")
    for r in out:
        print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))
    test_cold = out[0]["baseline"] + out[0]["prune"] + out[0]["check"]
    test_warm = out[1]["baseline"] + out[1]["prune"] + out[1]["check"]
    print(f"  warm speed-up: {speedup:.2f}x wall, {test_cold / test_warm:.2f}x inside the test")
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "device": args.device, "runs": out,
                                               "speedup_wall": speedup, "speedup_test": test_cold / test_warm}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
