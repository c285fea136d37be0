"""One entry of the committed file: made from a result (names and paths relative to the file, no
timings), read back as a result, validated field by field, and compared within batching noise."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

from ..errors import BaselineError
from ..identity.model_identity import IDENTITY_VERSION
from ..identity.spec import MeasurementSpec
from ..measure.perplexity_result import PerplexityResult

ENTRY_FIELDS: dict[str, Any] = {
    "test": str, "model": str, "corpus": str, "corpus_sha256": str, "protocol": str, "seqlen": int,
    "n_tokens": int, "n_windows_total": int, "device": str, "dtype": str, "attn_implementation": str,
    "torch": str, "transformers": str, "protocol_version": int, "ppl": (int, float),
    "window_index": list, "window_nll": list, "window_weight": list,
}
PPL_TOLERANCE = 1e-9  # relative: a committed ppl must be the one its window_nll give
NOISE = 1e-5  # relative: re-measured window NLLs this close are the committed ones (batching noise)


def entry_for(result: PerplexityResult, spec: MeasurementSpec, *, test: str, model: str,
              file_dir: Path) -> dict[str, Any]:
    """A finite result as a committed entry: names and paths relative to the file, no timings."""
    return {
        "test": test,
        "model": relative_name(model, file_dir),
        "model_fingerprint": spec.model,
        "model_identity": IDENTITY_VERSION,
        "tokenizer_fingerprint": spec.tokenizer,
        "corpus": relative_name(result.corpus, file_dir),
        "corpus_sha256": spec.corpus,
        "protocol": result.protocol,
        "seqlen": result.seqlen,
        "stride": result.stride,
        "max_windows": spec.max_windows,
        "n_tokens": result.n_tokens,
        "n_windows_total": result.n_windows_total,
        **spec.runtime_entry(),
        "ppl": result.ppl,
        "window_index": list(result.window_index),
        "window_nll": list(result.window_nll),
        "window_weight": list(result.window_weight),
        **({"lm_eval": result.lm_eval.to_json()} if result.lm_eval is not None else {}),
        **({"size": spec.size.to_json()} if spec.size is not None else {}),
    }


def relative_name(name: str, file_dir: Path) -> str:
    """A path as seen from the file's folder (POSIX separators); a name (hub id, corpus) as is.
    A committed file never holds a path outside its repository: a model in the Hugging Face
    cache is named by its hub id, anything else outside by its folder's or file's name."""
    if not name or not (os.path.isabs(name) or os.path.exists(name)):
        return name
    path = Path(os.path.abspath(name))
    hub = [part for part in path.parts if part.startswith(("models--", "datasets--"))]
    if hub:
        return hub[-1].split("--", 1)[1].replace("--", "/")
    root = _repository_root(file_dir)
    if root is not None and root != path and root not in path.parents:
        return path.name
    return Path(os.path.relpath(path, file_dir)).as_posix()


def _repository_root(folder: Path) -> Path | None:
    """The git work tree holding ``folder`` (None outside one)."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def entry_result(entry: dict[str, Any], spec: MeasurementSpec) -> PerplexityResult:
    from .result_store import result_from_entry

    return result_from_entry(entry, identity=spec.with_runtime(entry), corpus=spec.corpus_name)


def validate_entry(entry: Any, where: str) -> dict[str, Any]:
    """Type-check a (possibly hand-edited) entry; raise BaselineError naming the field."""
    if not isinstance(entry, dict):
        raise BaselineError(f"{where}: expected an object, got {type(entry).__name__}")
    for name, kind in ENTRY_FIELDS.items():
        if name not in entry:
            raise BaselineError(f"{where}: missing field {name!r}; regenerate it with --ppl-update-baselines")
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BaselineError(f"{where}: field {name!r} should be {_kind_name(kind)}, got {value!r:.60}")
    for name in ("model_fingerprint", "tokenizer_fingerprint", "matmul_precision", "sdpa_backends"):
        if name in entry and not isinstance(entry[name], str):
            raise BaselineError(f"{where}: field {name!r} should be str, got {entry[name]!r:.60}")
    if "kl" in entry:
        _validate_kl(entry["kl"], where)
    if "size" in entry:
        from ..identity.size_facts import validate_size

        try:
            validate_size(entry["size"])
        except ValueError as exc:
            raise BaselineError(f"{where}: field 'size' is not what pytest-llmppl records ({exc}); regenerate it "
                                "with --ppl-update-baselines") from None
    n = len(entry["window_index"])
    if not (len(entry["window_nll"]) == len(entry["window_weight"]) == n) or n == 0:
        raise BaselineError(f"{where}: window_index, window_nll and window_weight must have the same non-zero length")
    numbers = entry["window_nll"] + entry["window_weight"]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
        raise BaselineError(f"{where}: window_nll and window_weight must hold finite numbers")
    if not all(w > 0 for w in entry["window_weight"]):
        raise BaselineError(f"{where}: field 'window_weight' must hold positive numbers (tokens scored per window); "
                            "regenerate it with --ppl-update-baselines")
    _validate_windows(entry, where)
    ppl = float(entry["ppl"])
    if not math.isfinite(ppl) or ppl <= 0:
        raise BaselineError(f"{where}: ppl must be a positive finite number, got {entry['ppl']!r}")
    try:
        implied = math.exp(math.fsum(entry["window_nll"]) / math.fsum(entry["window_weight"]))
    except OverflowError:
        raise BaselineError(f"{where}: field 'window_nll' gives a perplexity too large to represent; the entry was "
                            "edited by hand: regenerate it with --ppl-update-baselines") from None
    if abs(implied - ppl) > PPL_TOLERANCE * implied:
        raise BaselineError(
            f"{where}: ppl {ppl!r} disagrees with its own window_nll (which give {implied!r}); the entry was edited "
            "by hand: regenerate it with --ppl-update-baselines"
        )
    return entry


def _validate_windows(entry: dict[str, Any], where: str) -> None:
    """``window_index``: distinct windows in order, within ``n_windows_total``, all of them unless the
    entry records a subset (``max_windows``, evenly spread): a hand-edited subset is never served as
    the whole corpus."""
    index, total = entry["window_index"], entry["n_windows_total"]
    fix = "regenerate it with --ppl-update-baselines"
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in index) or total < 1:
        raise BaselineError(f"{where}: field 'window_index' must hold window numbers; {fix}")
    if any(b <= a for a, b in itertools.pairwise(index)) or index[0] < 0 or index[-1] >= total:
        raise BaselineError(f"{where}: field 'window_index' must be increasing window numbers in 0..{total - 1} "
                            f"(n_windows_total {total}); {fix}")
    subset = entry.get("max_windows")
    if len(index) != (min(subset, total) if isinstance(subset, int) and subset > 0 else total):
        raise BaselineError(f"{where}: field 'window_index' holds {len(index)} windows, but n_windows_total is {total}"
                            f" and max_windows {subset}: the entry is not a whole measurement; {fix}")


def _validate_kl(value: Any, where: str) -> None:
    """A recorded check's KL statistics: an object naming the dense weights it was measured against."""
    from ..measure.divergence import KLDivergence

    try:
        if not isinstance(value, dict) or not isinstance(value.get("dense_model_fingerprint"), str):
            raise TypeError
        KLDivergence.from_json(value)
    except (KeyError, TypeError, ValueError):
        raise BaselineError(f"{where}: field 'kl' is not what pytest-llmppl records (the KL statistics against a "
                            "dense model); regenerate it with --ppl-update-baselines") from None


def _kind_name(kind: Any) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__




def same_numbers(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same windows and runtime, every window NLL within ``NOISE`` (relative)."""
    same_fields = all(a.get(k) == b.get(k) for k in ("window_index", "window_weight", "device", "dtype",
                                                     "attn_implementation", "torch", "transformers",
                                                     "protocol_version", "corpus_sha256", "model_fingerprint",
                                                     "tokenizer_fingerprint"))
    return same_fields and all(abs(x - y) <= NOISE * abs(y) for x, y in zip(a["window_nll"], b["window_nll"]))
