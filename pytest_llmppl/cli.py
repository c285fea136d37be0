"""``python -m pytest_llmppl eval ...`` and ``cache info|clear``: the pipeline without pytest."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import LLMPPLError

EXIT_ERROR = 2
EXIT_NOT_FINITE = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_llmppl", description="Perplexity of a causal LM.")
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="evaluate a model's perplexity")
    ev.add_argument("--model", required=True, help="local directory or hub id")
    ev.add_argument("--tokenizer", help="local directory or hub id (default: the model's)")
    ev.add_argument("--corpus", default="wikitext2", help="wikitext2 | ptb | c4 | FILE | hf:NAME[:CONFIG]:SPLIT[:COLUMN]")
    ev.add_argument("--seqlen", type=int)
    ev.add_argument("--protocol", default="torch-pruning", choices=["torch-pruning", "tokens", "sliding"])
    ev.add_argument("--stride", type=int, help="with --protocol sliding")
    ev.add_argument("--batch-size", default="auto", help="N or auto")
    ev.add_argument("--max-windows", type=int)
    ev.add_argument("--dtype", default="auto", help="float32 | bfloat16 | float16 | auto (as saved)")
    ev.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    ev.add_argument("--cache-dir")
    ev.add_argument("--no-cache", action="store_true")
    ev.add_argument("--allow-long-seqlen", action="store_true", help="allow seqlen beyond max_position_embeddings")
    ev.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    cache = sub.add_parser("cache", help="inspect or clear the cache")
    cache.add_argument("action", choices=["info", "clear"])
    cache.add_argument("--cache-dir")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "cache":
            return _cache(args)
        return _eval(args)
    except LLMPPLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _cache(args) -> int:
    from .cache import Store

    store = Store(args.cache_dir)
    if args.action == "clear":
        print(f"removed {store.clear()} entries from {store.root}")
        return 0
    info = store.info()
    print(f"cache: {store.root}")
    for ns, v in info.items():
        print(f"  {ns:10s} {v['entries']:6d} entries  {v['bytes'] / 2**20:9.2f} MiB")
    if not info:
        print("  (empty)")
    return 0


def load_model(name: str, dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False):
    """AutoModelForCausalLM from a directory or hub id; remote code only when asked for."""
    import torch
    from transformers import AutoModelForCausalLM

    from .errors import ModelError, SettingsError

    dtype = dtype or "auto"
    if dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise SettingsError(f"unknown dtype {dtype!r}: use float32, bfloat16, float16 or auto")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype if dtype == "auto" else getattr(torch, dtype), trust_remote_code=trust_remote_code,
        )
    except Exception as exc:
        hint = " (it asks to run its own code: add --trust-remote-code if you trust it)" if "trust_remote_code" in str(exc) else ""
        raise ModelError(f"could not load model {name!r}: {type(exc).__name__}: {exc}{hint}") from exc
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device)


def _eval(args) -> int:
    from .api import evaluate, resolve_tokenizer
    from .settings import parse_batch_size

    model = load_model(args.model, args.dtype, args.device, args.trust_remote_code)
    tok = resolve_tokenizer(model, args.tokenizer or args.model)
    progress = _progress_bar() if sys.stderr.isatty() and not args.json else None
    result = evaluate(model, tok, args.corpus, args.seqlen, protocol=args.protocol, stride=args.stride,
                      max_windows=args.max_windows, batch_size=parse_batch_size(args.batch_size),
                      cache_dir=args.cache_dir, use_cache=not args.no_cache,
                      allow_long_seqlen=args.allow_long_seqlen, progress=progress)
    if args.json:
        data = result.to_dict()
        data.pop("extra", None)
        data["tokens_source"] = result.extra.get("tokens_source")
        data["model"] = args.model
        print(json.dumps(data))
    else:
        print(str(result))
        print(f"  {result.n_tokens} tokens, {result.seconds:.2f} s, {result.tokens_per_second:,.0f} tokens/s "
              f"on {result.device} ({result.dtype}, batch {result.batch_size})")
    if not result.finite:
        print(f"warning: perplexity is {result.ppl} (not finite): the model's outputs overflowed "
              "or contain NaN; try float32 or bfloat16.", file=sys.stderr)
        return EXIT_NOT_FINITE
    return 0


def _progress_bar():
    from tqdm.auto import tqdm

    bar = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, unit="win", leave=False)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return update
