"""``--ppl-protocol=llama.cpp`` against llama.cpp's own ``llama-perplexity``, built from source.

llama-cpp-python's source package vendors llama.cpp; build its perplexity tool once
(minutes on 2 cores) and point this script at the source folder:

    pip download --no-deps --no-binary :all: llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
    cd llama_cpp_python-*/vendor/llama.cpp && cmake -B build -DLLAMA_CURL=OFF && \\
        cmake --build build --target llama-perplexity -j2
    pip install sentencepiece            # the converter imports it
    python benchmarks/llama_cpp_perplexity.py --llama-cpp path/to/vendor/llama.cpp

For the fixture model (and SmolLM2-135M when fetched) it writes an F32 GGUF with llama.cpp's
converter (the fixture's tokenizer is GPT-2's byte-level BPE, which the converter does not
recognise by hash: it is named ``gpt-2`` for it), runs ``llama-perplexity -c N`` on the fixture
corpus, evaluates the same model with ``protocol="llama.cpp"`` and writes both numbers to
``benchmarks/results/llama_cpp_perplexity.json``.  Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "fixtures" / "corpus" / "test.txt"
CONVERT = """
import runpy, sys
sys.path[:0] = [{src!r}, {src!r} + "/gguf-py"]
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"  # the fixture's tokenizer: GPT-2's byte-level BPE pre-tokenization
base.TextModel.get_vocab_base_pre = pre
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[1:]]
runpy.run_path({src!r} + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def models() -> list[tuple[str, Path, int]]:
    from fixtures.get_smollm2 import is_ready, model_dir

    found = [("fixture tiny-llama", ROOT / "fixtures" / "tiny-llama", 128)]
    if is_ready():
        found.append(("SmolLM2-135M", model_dir(), 512))
    return found


def llama_perplexity(src: Path, model: Path, n_ctx: int, work: Path) -> tuple[float, float]:
    gguf = work / f"{model.name}-f32.gguf"
    subprocess.run([sys.executable, "-c", CONVERT.format(src=str(src)), str(model), "--outtype", "f32",
                    "--outfile", str(gguf)], check=True, capture_output=True)
    for _ in range(3):  # its logger thread can lose the last line at exit: run again then
        t0 = time.perf_counter()
        done = subprocess.run([str(src / "build" / "bin" / "llama-perplexity"), "-m", str(gguf), "-f", str(CORPUS),
                               "-c", str(n_ctx), "-b", str(n_ctx), "-t", "2"], capture_output=True, text=True,
                              check=True)
        found = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", done.stdout + done.stderr)
        if found is not None:
            return float(found.group(1)), time.perf_counter() - t0
    raise SystemExit(f"llama-perplexity printed no estimate:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl import evaluate

    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, required=True, help="llama.cpp source folder with build/bin built")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, path, n_ctx in models():
            theirs, seconds = llama_perplexity(args.llama_cpp, path, n_ctx, Path(work))
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            ours = evaluate(model, tok, str(CORPUS), n_ctx, protocol="llama.cpp", use_cache=False)
            rows.append({"model": name, "n_ctx": n_ctx, "chunks": ours.n_windows, "llama_cpp_ppl": theirs,
                         "ours_ppl": ours.ppl, "relative_difference": ours.ppl / theirs - 1,
                         "llama_cpp_seconds": seconds})
            print(f"{name:20} n_ctx {n_ctx}: llama-perplexity {theirs:.4f} (printed to 4 decimals), ours "
                  f"{ours.ppl:.6f} over {ours.n_windows} chunks ({100 * rows[-1]['relative_difference']:+.3f}%)",
                  flush=True)
    out = ROOT / "benchmarks" / "results" / "llama_cpp_perplexity.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "corpus": "fixtures/corpus/test.txt",
                               "rows": rows}, indent=1) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
