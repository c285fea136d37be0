"""Baselines: keys, the on-disk cache entry, and the committed human-readable file.

A baseline's key is a digest of everything its number depends on: the model's
weights and config, the tokenizer, the corpus text, protocol, seqlen, stride,
max_windows.  The cache key adds the device type and dtype (a CPU float32 number
is not a GPU bfloat16 number); the committed file is looked up without them and
each entry records where it was measured, so a mismatch is reported.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import BaselineError
from .fingerprint import digest

FILE_FORMAT = "pytest-llmppl baselines v1"
NAMESPACE = "baselines"
TOP1_NAMESPACE = "top1"
ENTRY_FIELDS = {
    "ppl": (int, float), "corpus": str, "protocol": str, "seqlen": int, "n_tokens": int,
    "n_windows_total": int, "window_index": list, "window_nll": list, "window_weight": list,
    "device": str, "dtype": str,
}


@dataclass(frozen=True)
class BaselineKey:
    content: str  # without device/dtype: the committed file's key
    cache: str    # with device type and dtype: the local cache's key


def baseline_key(model_fp: str, tokenizer_fp: str, corpus_fp: str, *, protocol: str, seqlen: int,
                 stride, max_windows, device_type: str, dtype: str) -> BaselineKey:
    content = digest("baseline", 1, model_fp, tokenizer_fp, corpus_fp, protocol, seqlen, stride, max_windows)
    return BaselineKey(content, digest(content, device_type, dtype))


def result_to_entry(result, **extra) -> dict:
    """A PerplexityResult as a JSON-safe baseline entry."""
    data = {
        "ppl": result.ppl if math.isfinite(result.ppl) else None,
        "corpus": result.corpus, "protocol": result.protocol, "seqlen": result.seqlen,
        "stride": result.stride, "n_tokens": result.n_tokens, "n_windows_total": result.n_windows_total,
        "window_index": list(result.window_index), "window_nll": list(result.window_nll),
        "window_weight": list(result.window_weight), "device": result.device.split(":")[0],
        "dtype": result.dtype, "seconds": round(result.seconds, 4),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    data.update(extra)
    return data


def entry_to_result(entry: dict):
    from .result import PerplexityResult

    return PerplexityResult(
        ppl=float(entry["ppl"]), corpus=entry["corpus"], protocol=entry["protocol"], seqlen=entry["seqlen"],
        stride=entry.get("stride"), n_tokens=entry["n_tokens"], n_windows=len(entry["window_index"]),
        n_windows_total=entry["n_windows_total"], window_index=tuple(entry["window_index"]),
        window_nll=tuple(float(x) for x in entry["window_nll"]),
        window_weight=tuple(entry["window_weight"]), seconds=float(entry.get("seconds", 0.0)),
        device=entry["device"], dtype=entry["dtype"],
    )


def validate_entry(entry, where: str) -> dict:
    """Type-check a (possibly hand-edited) entry; raise BaselineError naming the field."""
    if not isinstance(entry, dict):
        raise BaselineError(f"{where}: expected an object, got {type(entry).__name__}")
    for name, kind in ENTRY_FIELDS.items():
        if name not in entry:
            raise BaselineError(f"{where}: missing field {name!r}")
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BaselineError(f"{where}: field {name!r} should be {_kind_name(kind)}, got {value!r:.60}")
    n = len(entry["window_index"])
    if not (len(entry["window_nll"]) == len(entry["window_weight"]) == n) or n == 0:
        raise BaselineError(f"{where}: window_index, window_nll and window_weight must have the same non-zero length")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in entry["window_nll"]):
        raise BaselineError(f"{where}: window_nll must hold numbers")
    if not math.isfinite(float(entry["ppl"])) or entry["ppl"] <= 0:
        raise BaselineError(f"{where}: ppl must be a positive finite number, got {entry['ppl']!r}")
    return entry


def _kind_name(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


class BaselinesFile:
    """The committed JSON file: ``{"format": ..., "baselines": {content_key: entry}}``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.updated: dict[str, dict] = {}

    def load(self, must_exist: bool = False) -> "BaselinesFile":
        if not self.path.exists():
            if must_exist:
                raise BaselineError(
                    f"baselines file {self.path} does not exist: create it with --ppl-update-baselines "
                    "(on the machine the suite runs on) and commit it."
                )
            return self
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BaselineError(
                f"baselines file {self.path} is not valid JSON ({exc}); fix it or regenerate it with "
                "--ppl-update-baselines."
            ) from None
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT or not isinstance(data.get("baselines"), dict):
            raise BaselineError(
                f"baselines file {self.path} is not a pytest-llmppl baselines file (expected "
                f'{{"format": "{FILE_FORMAT}", "baselines": {{...}}}}); regenerate it with --ppl-update-baselines.'
            )
        for key, entry in data["baselines"].items():
            validate_entry(entry, f"baselines file {self.path}, entry {key[:12]}")
        self.entries = data["baselines"]
        return self

    def get(self, content_key: str) -> dict | None:
        return self.updated.get(content_key) or self.entries.get(content_key)

    def record(self, content_key: str, entry: dict) -> None:
        self.updated[content_key] = entry

    def render(self) -> str:
        """One field per line, number lists on one line: readable and diff-friendly."""
        merged = dict(sorted({**self.entries, **self.updated}.items()))
        blocks = []
        for key, entry in merged.items():
            fields = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in entry.items())
            blocks.append(f"  {json.dumps(key)}: {{\n{fields}\n  }}")
        body = ",\n".join(blocks)
        return f'{{\n "format": {json.dumps(FILE_FORMAT)},\n "baselines": {{\n{body}\n }}\n}}\n'



def pack_top1(top1: dict):
    """window -> int32 array  as  (one int32 array, metadata with the windows and lengths)."""
    import numpy as np

    windows = sorted(top1)
    data = np.concatenate([top1[i] for i in windows]).astype(np.int32) if windows else np.zeros(0, np.int32)
    return data, {"windows": windows, "lengths": [int(len(top1[i])) for i in windows]}


def unpack_top1(meta: dict, data) -> dict | None:
    windows, lengths = meta.get("windows"), meta.get("lengths")
    if not isinstance(windows, list) or not isinstance(lengths, list) or sum(lengths) != len(data):
        return None
    out, pos = {}, 0
    for i, n in zip(windows, lengths):
        out[i] = data[pos:pos + n]
        pos += n
    return out
