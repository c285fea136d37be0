"""Results in the local store, addressed by their identity (``MeasurementSpec.key``).

An entry holds the per-window NLLs (and, beside it, the argmax at every scored
position, int32, and for a baseline the dense model's top-k reference), so a cached
result serves paired statistics, top-1 agreement and KL divergence exactly as a fresh
one.  A candidate's KL statistics against a dense model are kept too, keyed by both.
Only complete results are stored: an early-stopped run is an estimate, never a result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..identity.spec import MeasurementSpec
from ..measure.perplexity_result import PerplexityResult
from .store import Store, Write

NAMESPACE = "results"
TOP1_NAMESPACE = "top1"
TOPK_NAMESPACE = "topk"
KL_NAMESPACE = "divergence"
FORMAT = 1


class ResultStore:
    def __init__(self, store: Store):
        self.store = store

    def get(self, spec: MeasurementSpec, run: str | None = None) -> PerplexityResult | None:
        """The stored result, or None; with ``run``, only one stored by that run.  A baseline's
        dense top-k (tens of MB) is not read here: ``topk`` reads it when a check needs it."""
        entry = self.store.get_json(NAMESPACE, spec.key)
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        if run is not None and entry.get("run") != run:
            return None
        try:
            return result_from_entry(entry, top1=self._top1(spec), identity=spec)
        except (KeyError, TypeError, ValueError):
            self.store.delete(NAMESPACE, spec.key)
            return None

    def put(self, spec: MeasurementSpec, result: PerplexityResult, run: str = "",
            kl: tuple[str, Any] | None = None) -> None:
        """A complete, finite result with its argmax and, for a baseline, its dense top-k; with
        ``kl`` (dense weights, ``KLDivergence``) a candidate's divergence from that dense model."""
        if result.n_windows != spec.n_windows or not result.finite:
            return  # an early-stopped estimate or a NaN: never served as a result
        writes: list[Write] = []
        if result.top1 is not None:
            data, meta = pack_top1(result.top1)
            writes.append(Write(TOP1_NAMESPACE, spec.key, data, meta, array=True))
        if result.topk is not None:
            writes.append(topk_write(spec, result.topk))
        if kl is not None:
            dense_model, divergence = kl
            writes.append(Write(KL_NAMESPACE, kl_key(spec, dense_model), divergence.to_json(), {"kind": "kl"}))
        entry = {"format": FORMAT, **result_entry(result), "run": run}
        writes.append(Write(NAMESPACE, spec.key, entry, {"kind": "result", "corpus": result.corpus}))
        self.store.put_together(writes)  # the result entry last: it is what readers look for

    def topk(self, spec: MeasurementSpec) -> Any:
        """The dense top-k reference kept for this identity (``divergence.DenseTopK``), or None."""
        from ..measure.divergence import DenseTopK

        hit = self.store.get_array(TOPK_NAMESPACE, spec.key)
        return DenseTopK.unpack(hit[0], hit[1]) if hit is not None else None

    def put_topk(self, spec: MeasurementSpec, topk: Any) -> None:
        self.store.put_together([topk_write(spec, topk)])

    def kl(self, candidate: MeasurementSpec, dense_model: str) -> Any:
        """A candidate's KL statistics against the dense weights ``dense_model``, or None."""
        from ..measure.divergence import KLDivergence

        entry = self.store.get_json(KL_NAMESPACE, kl_key(candidate, dense_model))
        try:
            return KLDivergence.from_json(entry) if isinstance(entry, dict) else None
        except (KeyError, TypeError, ValueError):
            return None

    @contextmanager
    def lock(self, spec: MeasurementSpec) -> Iterator[None]:
        """Held while this process measures ``spec``: xdist workers needing it measure it once."""
        with self.store.measure_lock(NAMESPACE, spec.key):
            yield

    def _top1(self, spec: MeasurementSpec) -> dict[int, Any] | None:
        hit = self.store.get_array(TOP1_NAMESPACE, spec.key)
        return unpack_top1(hit[0], hit[1]) if hit is not None else None


def topk_write(spec: MeasurementSpec, topk: Any) -> Write:
    data, meta = topk.pack()
    return Write(TOPK_NAMESPACE, spec.key, data, meta, array=True)


def kl_key(candidate: MeasurementSpec, dense_model: str) -> str:
    """Both identities side by side (two SHA-256 digests): no second hash needed."""
    return candidate.key + dense_model


def result_entry(result: PerplexityResult) -> dict[str, Any]:
    """The numbers of a result, JSON-safe."""
    return {
        "ppl": result.ppl if math.isfinite(result.ppl) else None,
        "corpus": result.corpus, "protocol": result.protocol, "seqlen": result.seqlen, "stride": result.stride,
        "n_tokens": result.n_tokens, "n_windows_total": result.n_windows_total,
        "window_index": list(result.window_index), "window_nll": list(result.window_nll),
        "window_weight": list(result.window_weight), "device": result.device, "dtype": result.dtype,
        "seconds": result.seconds, "batch_size": result.batch_size, "head_path": result.head_path,
        **({"lm_eval": result.lm_eval.to_json()} if result.lm_eval is not None else {}),
    }


def result_from_entry(entry: dict[str, Any], *, top1: dict[int, Any] | None = None, topk: Any = None,
                      identity: MeasurementSpec | None = None, corpus: str | None = None) -> PerplexityResult:
    from ..measure.perplexity_result import ppl_from

    nll = tuple(float(x) for x in entry["window_nll"])
    weight = tuple(entry["window_weight"])
    return PerplexityResult(
        ppl=ppl_from(list(nll), list(weight)), corpus=corpus or entry["corpus"], protocol=entry["protocol"],
        seqlen=entry["seqlen"], stride=entry.get("stride"), n_tokens=entry["n_tokens"],
        n_windows=len(entry["window_index"]), n_windows_total=entry["n_windows_total"],
        window_index=tuple(entry["window_index"]), window_nll=nll, window_weight=weight,
        seconds=float(entry.get("seconds") or 0.0), device=entry["device"], dtype=entry["dtype"],
        batch_size=int(entry.get("batch_size") or 1), head_path=entry.get("head_path", "full"),
        top1=top1, topk=topk, identity=identity, lm_eval=_lm_eval(entry.get("lm_eval")),
        size=_size(entry.get("size")),
    )


def _size(value: Any) -> Any:
    """The size facts an entry recorded (None for an entry made before 0.4)."""
    from ..identity.size_facts import validate_size

    try:
        return validate_size(value) if value is not None else None
    except ValueError:
        return None


def _lm_eval(value: Any) -> Any:
    from ..measure.lmeval import LMEvalMetrics

    if not isinstance(value, dict):
        return None
    try:
        return LMEvalMetrics.from_json(value)
    except (KeyError, TypeError):
        return None


def pack_top1(top1: dict[int, Any]) -> tuple[Any, dict[str, Any]]:
    """window -> int32 array  as  (one int32 array, metadata with the windows and lengths)."""
    import numpy as np

    windows = sorted(top1)
    data = np.concatenate([top1[i] for i in windows]).astype(np.int32) if windows else np.zeros(0, np.int32)
    return data, {"windows": windows, "lengths": [len(top1[i]) for i in windows]}


def unpack_top1(meta: dict[str, Any], data: Any) -> dict[int, Any] | None:
    windows, lengths = meta.get("windows"), meta.get("lengths")
    if not isinstance(windows, list) or not isinstance(lengths, list) or sum(lengths) != len(data):
        return None
    out, pos = {}, 0
    for i, n in zip(windows, lengths):
        out[i] = data[pos:pos + n]
        pos += n
    return out
