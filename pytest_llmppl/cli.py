"""``python -m pytest_llmppl eval ...`` and ``cache info|clear|prune``: the pipeline without pytest
(``merge``, ``diff`` and ``durations``: ``cli_files``).

The evaluation options are the plugin's per-call settings (``--seqlen`` is ``--ppl-seqlen``,
``--dtype`` is ``--ppl-dtype``: the evaluation dtype, autocast below the weights), taken
from the same table and parsed by the same parsers.  ``--load-dtype`` is how the weights
are loaded.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from .errors import LLMPPLError, SettingsError
from .settings import CHECK_ONLY, OPTIONS, Settings, per_call_names

EXIT_ERROR = 2
EXIT_NOT_FINITE = 3
# What applies to one evaluation: a check's settings (early stop, its record, its KL budget) do not.
CLI_SETTINGS = tuple(n for n in per_call_names() if n not in CHECK_ONLY)
LOAD_DTYPES = ("auto", "float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_llmppl", description="Perplexity of a causal LM.")
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="evaluate a model's perplexity")
    ev.add_argument("--model", required=True, help="local directory or hub id")
    ev.add_argument("--tokenizer", help="local directory or hub id (default: the model's)")
    for name in CLI_SETTINGS:
        opt = OPTIONS[name]
        flag = f"--{name.replace('_', '-')}"
        if opt.flag:
            ev.add_argument(flag, action="store_true", help=opt.help)  # argparse help: "%%" prints "%"
        else:
            ev.add_argument(flag, help=opt.help)
    ev.add_argument("--load-dtype", default="auto", choices=LOAD_DTYPES,
                    help="load the weights in this dtype (default: as saved)")
    ev.add_argument("--cache-dir")
    ev.add_argument("--no-cache", action="store_true")
    ev.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    cache = sub.add_parser("cache", help="inspect, prune or clear the caches (the user cache and pytest's own store)")
    cache.add_argument("action", choices=["info", "clear", "prune"])
    cache.add_argument("--unused-days", type=float, metavar="DAYS",
                       help="prune: remove entries no run has used for DAYS days")
    cache.add_argument("--max-size", metavar="SIZE",
                       help="prune: then remove the least recently used entries until each store holds at most "
                            "SIZE (bytes, or with K/M/G/T, binary: 500M, 2G)")
    cache.add_argument("--cache-dir", help="a store given with --ppl-cache-dir / $PYTEST_LLMPPL_CACHE_DIR")
    cache.add_argument("--rootdir", default=".", help="the pytest project whose .pytest_cache to look in (default: .)")
    from .cli_files import add_parsers

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "cache":
            return _cache(args)
        if args.command == "eval":
            return _eval(args)
        from .cli_files import run

        return run(args)
    except LLMPPLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _stores(args: Any) -> list[Path]:
    """The stores this command sees: the one given (or the user default) and pytest's own."""
    from .keep.store import default_cache_dir

    roots = [Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()]
    pytest_store = Path(args.rootdir) / ".pytest_cache" / "d" / "llmppl"
    if pytest_store.is_dir() and pytest_store.resolve() not in [r.resolve() for r in roots]:
        roots.append(pytest_store)
    return roots


def _cache(args: Any) -> int:
    from .keep.store import Store

    if args.action == "prune":
        if args.unused_days is None and args.max_size is None:
            raise SettingsError("cache prune needs --unused-days DAYS and/or --max-size SIZE")
        if args.unused_days is not None and not args.unused_days >= 0:
            raise SettingsError(f"--unused-days must be >= 0, not {args.unused_days}")
        max_bytes = None if args.max_size is None else parse_size(args.max_size)
    elif args.unused_days is not None or args.max_size is not None:
        raise SettingsError("--unused-days and --max-size go with cache prune")
    for root in _stores(args):
        store = Store(root)
        if args.action == "clear":
            print(f"removed {store.clear()} entries from {store.root}")
            continue
        if args.action == "prune":
            try:
                done = store.prune(unused_days=args.unused_days, max_bytes=max_bytes)
            except OSError as exc:
                raise SettingsError(f"cannot prune {store.root}: {exc}") from None
            print(f"removed {done.entries} entries ({done.bytes / 2**20:.2f} MiB) from {store.root}; "
                  f"{done.kept_entries} entries ({done.kept_bytes / 2**20:.2f} MiB) kept")
            continue
        print(f"cache: {store.root}")
        info = store.info()
        for ns, v in info.items():
            print(f"  {ns:10s} {v['entries']:6d} entries  {v['bytes'] / 2**20:9.2f} MiB")
        if not info:
            print("  (empty)")
    return 0


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``500M`` -> bytes (binary units; ``MB`` and ``MiB`` mean the same here)."""
    match = _SIZE.match(text)
    if match is None:
        raise SettingsError(f"--max-size {text!r} is not a size: use bytes or a number with K, M, G or T (e.g. 2G)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** " kmgt".index(unit.lower() or " "))


def load_model(name: str, dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False) -> Any:
    """AutoModelForCausalLM from a directory or hub id; remote code only when asked for."""
    import torch
    from transformers import AutoModelForCausalLM

    from .errors import ModelError

    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype if dtype == "auto" else getattr(torch, dtype), trust_remote_code=trust_remote_code,
        )
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for "cannot load"
        remote = "trust_remote_code" in str(exc)
        hint = " (it asks to run its own code: add --trust-remote-code if you trust it)" if remote else ""
        raise ModelError(f"could not load model {name!r}: {type(exc).__name__}: {exc}{hint}") from None
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device)


def _settings(args: Any) -> Settings:
    given = {name: getattr(args, name) for name in CLI_SETTINGS if getattr(args, name) not in (None, False)}
    try:
        return Settings().with_overrides(**given)
    except SettingsError as exc:
        raise SettingsError(str(exc).replace("--ppl-", "--")) from None


def _eval(args: Any) -> int:
    from .api import evaluate
    from .measure.measurement import resolve_tokenizer
    from .startup import check_device

    settings = _settings(args)
    if settings.device not in (None, "auto"):
        check_device(settings.device)
    model = load_model(args.model, args.load_dtype, settings.device, args.trust_remote_code)
    tok = resolve_tokenizer(model, args.tokenizer or args.model)
    progress = _progress_bar() if sys.stderr.isatty() and not args.json else None
    result = evaluate(model, tok, settings.corpus, settings.seqlen, **settings.engine_kwargs(),
                      cache_dir=args.cache_dir, use_cache=not args.no_cache,
                      allow_long_seqlen=settings.allow_long_seqlen, progress=progress)
    if args.json:
        data = result.to_dict()
        data["model"] = args.model
        print(json.dumps(data, allow_nan=False))
    else:
        print(str(result))
        print(f"  {result.n_tokens} tokens, {result.seconds:.2f} s, {result.tokens_per_second:,.0f} tokens/s "
              f"on {result.device} ({result.dtype}, batch {result.batch_size}, {result.head_path} head)")
    if not result.finite:
        print(f"warning: perplexity is {result.ppl} (not finite): the model's outputs overflowed "
              "or contain NaN; try float32 or bfloat16.", file=sys.stderr)
        return EXIT_NOT_FINITE
    return 0


def _progress_bar() -> Any:
    from tqdm.auto import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, unit="win", leave=False)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return update
