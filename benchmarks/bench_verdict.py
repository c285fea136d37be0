"""What one pruned-model verdict costs: Torch-Pruning's way against the plugin, cold and warm.

For a seeded random Llama at a real shape (the same weights in every process, so its
fingerprint is stable) and a token stream of real length, five ways to reach a verdict
on a pruned copy (``prune_mlp`` 20%, deterministic):

  (a) torch-pruning  its evaluation loop on the dense and the pruned model (batch 1, full logits)
  (b) cold           the plugin, empty cache: baseline and check measured
  (c) warm baseline  the baseline served from the cache, the check measured
  (d) warm, same     the baseline and the unchanged pruned model both served: zero forwards
  (e) early stop     warm baseline, a clear-cut change (head weights x4), --ppl-early-stop; the
                     windows its verdict rested on are printed (the first look is at 24 windows,
                     so at most N/24 times fewer forwards than (c))
  (f) fresh runner   a committed file holding the baseline and the recorded candidate, no local
                     store at all (--ppl-no-cache): the unchanged pruned model from the file alone

Each runs in its own process.  "in test" is the time of the evaluation calls alone
(``ppl_baseline`` + ``ppl_check``, or the two loops), synchronized; "process" is the whole
pytest process (imports, CUDA start, building the model).  Pruning is timed apart: it is
the same in every case.

    python benchmarks/bench_verdict.py --shape tiny                         # CPU, a minute
    python benchmarks/bench_verdict.py --shape llama-2-7b --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

MODEL = '''
import json, os, time, torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPE = json.loads(os.environ["BENCH_SHAPE"])
DEVICE = os.environ["BENCH_DEVICE"]


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build():
    """The dense model: seeded random init at the shape, built where it runs."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(DEVICE):
            model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=4096, **SHAPE))
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def candidate(model, clear_cut):
    """The pruned model; a clear-cut change sharpens its head four-fold on top."""
    from pytest_llmppl.pruning import prune_mlp

    pruned = prune_mlp(model, 0.2, copy_model=True)
    if clear_cut:
        with torch.no_grad():
            pruned.lm_head.weight.mul_(4)
    sync()
    return pruned
'''

SUITE = MODEL + '''
import pytest
from transformers import AutoTokenizer


def test_verdict(ppl_baseline, ppl_check):
    mode = os.environ["BENCH_MODE"]
    tok = AutoTokenizer.from_pretrained(os.environ["BENCH_TOKENIZER"])
    model = build()
    sync()
    profile = None
    if os.environ.get("BENCH_PROFILE"):  # where the in-test time goes, for one case
        import cProfile
        profile = cProfile.Profile()
        profile.enable()
    t0 = time.perf_counter()
    base = ppl_baseline(model, tok)
    sync()
    times = {"baseline_s": time.perf_counter() - t0, "baseline_source": base.source.value}
    if mode != "baseline":
        t1 = time.perf_counter()
        pruned = candidate(model, clear_cut=mode == "clear-cut")
        times["prune_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if mode == "clear-cut":
            with pytest.raises(AssertionError, match="exceeds the threshold"):
                ppl_check(pruned, tok, baseline=base, budget="5%")
        else:
            ppl_check(pruned, tok, baseline=base, budget="1000%")
        sync()
        times["check_s"] = time.perf_counter() - t2
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["BENCH_PROFILE"])
    json.dump(times, open(os.environ["BENCH_TIMES"], "w"))
'''

TP_WAY = MODEL + '''
import sys
sys.path.insert(0, os.environ["BENCH_DIR"])
from bench_engine import reference_loop
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(os.environ["BENCH_TOKENIZER"])
ids = torch.tensor(tok(open(os.environ["BENCH_CORPUS"], encoding="utf-8").read(), verbose=False)["input_ids"])
ids = ids.to(DEVICE)
seqlen = int(os.environ["BENCH_SEQLEN"])
model = build()
t0 = time.perf_counter()
pruned = candidate(model, clear_cut=False)
prune_s = time.perf_counter() - t0
sync()
t1 = time.perf_counter()
dense_ppl = reference_loop(model, ids, seqlen)
pruned_ppl = reference_loop(pruned, ids, seqlen)
sync()
json.dump({"baseline_s": 0.0, "check_s": time.perf_counter() - t1, "prune_s": prune_s,
           "dense_ppl": dense_ppl, "pruned_ppl": pruned_ppl}, open(os.environ["BENCH_TIMES"], "w"))
'''


def corpus_of(tokens_wanted: int, tokenizer_dir: Path, path: Path) -> int:
    """Paragraphs of the bundled corpus, repeated, until ``tokens_wanted`` tokens: the window
    count of a real corpus (WikiText-2 with Llama-2's tokenizer: 83 x 4096)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [json.loads(line)["text"] for line in (ROOT / "fixtures" / "corpus" / "train.jsonl").open(encoding="utf-8")]
    parts, n, i = [], 0, 0
    while n < tokens_wanted:
        text = rows[i % len(rows)]
        parts.append(text)
        n += len(tok(text, verbose=False)["input_ids"]) + 1
        i += 1
    path.write_text("\n\n".join(parts), encoding="utf-8")
    return len(tok(path.read_text(encoding="utf-8"), verbose=False)["input_ids"])


def _plugin() -> list[str]:
    from importlib.metadata import entry_points

    installed = any(ep.value == "pytest_llmppl.plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_llmppl.plugin"]


def main(argv: list[str] | None = None) -> int:
    from bench_engine import GPU_SHAPES

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    ap.add_argument("--profile", metavar="DIR",
                    help="cProfile (d) and (f)'s in-test calls; the top functions printed, stats kept in DIR")
    args = ap.parse_args(argv)
    shapes = {"tiny": dict(vocab_size=1024, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=4, head_dim=64, windows=72, seqlen=512),
              **GPU_SHAPES}
    shape = dict(shapes[args.shape])
    seqlen, windows = shape.pop("seqlen"), shape.pop("windows")
    work = Path(tempfile.mkdtemp(prefix="llmppl-verdict-"))
    tokenizer = ROOT / "fixtures" / "tiny-llama"
    corpus = work / "corpus.txt"
    n_tokens = corpus_of(windows * seqlen, tokenizer, corpus)
    (work / "test_verdict.py").write_text(SUITE)
    (work / "tp_way.py").write_text(TP_WAY)
    env = {**os.environ, "BENCH_SHAPE": json.dumps(shape), "BENCH_DEVICE": args.device,
           "BENCH_TOKENIZER": str(tokenizer),
           "BENCH_CORPUS": str(corpus), "BENCH_SEQLEN": str(seqlen), "BENCH_DIR": str(ROOT / "benchmarks"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def run(name: str, cmd: list[str], **extra: str) -> dict:
        env.update(extra, BENCH_TIMES=str(work / f"{name}.json"))
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            print(p.stdout[-6000:], p.stderr[-6000:])
            raise SystemExit(f"{name} failed")
        times = json.loads((work / f"{name}.json").read_text())
        return {"case": name, "process_s": wall, "in_test_s": times.get("baseline_s", 0) + times.get("check_s", 0),
                **times}

    def plugin(name: str, cache: str, *extra_args: str, mode: str = "verdict") -> dict:
        profiled = args.profile and name[:3] in ("(d)", "(f)")
        env.pop("BENCH_PROFILE", None)
        if profiled:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            env["BENCH_PROFILE"] = str(Path(args.profile).resolve() / f"{name[1]}.prof")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_plugin(), "test_verdict.py",
               f"--ppl-corpus={corpus}", f"--ppl-seqlen={seqlen}", f"--ppl-cache-dir={work / cache}",
               f"--ppl-device={args.device}", "-W", "ignore::UserWarning", "--rootdir", str(work), *extra_args]
        return run(name, cmd, BENCH_MODE=mode)

    rows = [run("(a) torch-pruning", [sys.executable, "tp_way.py"])]
    plugin("warm-up: baseline only", "warm", mode="baseline")  # fills the cache (c)-(e) start from
    shutil.copytree(work / "warm", work / "warm-early")
    rows.append(plugin("(b) cold", "cold"))
    rows.append(plugin("(c) warm baseline", "warm"))
    rows.append(plugin("(d) warm, unchanged model", "warm"))
    rows.append(plugin("(e) warm + early stop", "warm-early", "--ppl-early-stop", f"--ppl-report={work / 'e.json'}",
                       mode="clear-cut"))
    (check,) = [r for r in json.loads((work / "e.json").read_text())["records"] if r["kind"] == "check"]
    early = check.get("early")  # the JSON report says after how many windows the verdict came
    rows[-1]["windows_measured"] = f"{early['decided_after']}/{early['of']}" if early else "all"
    committed = work / "ppl-baselines.json"
    plugin("record: committed file", "record", f"--ppl-baselines={committed}", "--ppl-update-baselines")
    rows.append(plugin("(f) fresh runner, file only", "fresh", f"--ppl-baselines={committed}", "--ppl-strict",
                       "--ppl-no-cache"))
    ref = rows[0]["in_test_s"]
    print(f"\none pruned-model verdict: shape {args.shape}, {n_tokens} tokens = {n_tokens // seqlen} windows x "
          f"{seqlen}, device {args.device}")
    print(f"{'case':28s} {'in test s':>10s} {'vs (a)':>8s} {'process s':>10s} {'prune s':>8s}  sources")
    for r in rows:
        gain = ref / r["in_test_s"] if r["in_test_s"] > 0 else float("inf")
        src = r.get("baseline_source", "")
        if "windows_measured" in r:
            src += f", check measured {r['windows_measured']} windows"
        print(f"{r['case']:28s} {r['in_test_s']:10.3f} {gain:7.1f}x {r['process_s']:10.1f} {r.get('prune_s', 0):8.2f}  "
              f"{src}")
    if args.profile:
        import pstats

        for case in ("d", "f"):
            print(f"\n--- ({case}): the in-test calls' top functions by cumulative time")
            pstats.Stats(str(Path(args.profile) / f"{case}.prof")).sort_stats("cumulative").print_stats(28)
    if args.json:
        import platform

        import torch
        import transformers

        meta = {"shape": args.shape, "device": args.device, "tokens": n_tokens, "seqlen": seqlen,
                "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version(),
                "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor(),
                "date": time.strftime("%Y-%m-%d")}
        Path(args.json).write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
