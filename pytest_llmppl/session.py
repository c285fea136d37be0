"""What the fixtures do, without pytest: measure, serve baselines, decide checks.

One ``PPLSession`` per pytest process.  Baselines come from, in order: this
process's memory, the committed file (``--ppl-baselines``), the local cache, and
only then a measurement, which is done under a cross-process lock so that several
xdist workers needing the same baseline measure it once.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

from .baselines import (
    NAMESPACE,
    TOP1_NAMESPACE,
    BaselineKey,
    BaselinesFile,
    baseline_key,
    entry_to_result,
    pack_top1,
    result_to_entry,
    unpack_top1,
)
from .settings import Budget, Settings


class PPLCheckFailure(AssertionError):
    """A check over budget, or a non-finite perplexity: an ordinary test failure."""


class BaselineMismatchWarning(UserWarning):
    """The committed baseline was measured on another device or dtype."""


@dataclass
class Baseline:
    """What ``ppl_baseline`` returns: the result plus where it came from."""

    result: object
    source: str  # memory | file | cache | measured
    key: BaselineKey
    model: str = ""
    top1: dict | None = None  # window -> the dense model's argmax at each scored position

    def __float__(self) -> float:
        return float(self.result.ppl)

    @property
    def ppl(self) -> float:
        return self.result.ppl

    def __repr__(self) -> str:
        return f"Baseline(ppl={self.ppl:.4f}, source={self.source!r})"


@dataclass
class PPLSession:
    settings: Settings
    store: object = None  # cache.Store, or None with --ppl-no-cache
    file: BaselinesFile | None = None
    records: list = field(default_factory=list)
    _memo: dict = field(default_factory=dict)

    # -- measuring ------------------------------------------------------------
    def measure(self, model, tokenizer, settings: Settings, **extra):
        from .api import evaluate

        return evaluate(model, tokenizer, store=self.store, use_cache=self.store is not None,
                        **settings.engine_kwargs(), **extra)

    def _early_rule(self, model, base, threshold: float, settings: Settings):
        """An EarlyDecision and a fixed pseudo-random window order, when the baseline covers
        every window of the same corpus/seqlen/protocol; else (None, None)."""
        import random

        from .corpus import load_corpus
        from .engine import resolve_seqlen
        from .stats import EarlyDecision

        if not settings.early_stop or settings.max_windows is not None or not hasattr(base, "window_index"):
            return None, None
        same = (base.n_windows == base.n_windows_total and base.protocol == settings.protocol
                and base.seqlen == resolve_seqlen(model, settings.seqlen, settings.allow_long_seqlen)
                and base.corpus == load_corpus(settings.corpus).name)
        if not same:
            return None, None
        idx = list(base.window_index)
        rule = EarlyDecision(dict(zip(idx, base.window_nll)), dict(zip(idx, base.window_weight)), threshold,
                             settings.confidence)
        random.Random(0).shuffle(idx)
        return rule, idx

    def _key(self, model, tokenizer, settings: Settings):
        from .api import resolve_tokenizer
        from .corpus import load_corpus
        from .engine import resolve_seqlen
        from .fingerprint import model_fingerprint, tokenizer_fingerprint

        tok = resolve_tokenizer(model, tokenizer)
        corpus = load_corpus(settings.corpus)
        seqlen = resolve_seqlen(model, settings.seqlen, settings.allow_long_seqlen)
        device_type = (settings.device or _model_device(model)).split(":")[0]
        key = baseline_key(model_fingerprint(model), tokenizer_fingerprint(tok), corpus.fingerprint,
                           protocol=settings.protocol, seqlen=seqlen, stride=settings.stride,
                           max_windows=settings.max_windows, device_type=device_type,
                           dtype=settings.dtype if settings.dtype != "auto" else _model_dtype(model))
        return tok, key, device_type

    # -- baselines --------------------------------------------------------------
    def baseline(self, model, tokenizer=None, test: str = "", **overrides) -> Baseline:
        settings = self.settings.with_overrides(**overrides)
        t0 = time.perf_counter()
        tok, key, device_type = self._key(model, tokenizer, settings)
        name = str(getattr(model, "name_or_path", "") or type(model).__name__)
        found = self._memo.get(key.cache)
        if found is None:
            found = self._from_file(key, device_type, settings, name)
        if found is None and self.store is not None and not self.settings.update_baselines:
            entry = self.store.get_json(NAMESPACE, key.cache)
            if entry is not None:
                found = Baseline(entry_to_result(entry), "cache", key, name, self._cached_top1(key))
        if found is None:
            found = self._measure_baseline(model, tok, settings, key, name)
        self._memo[key.cache] = Baseline(found.result, "memory", key, name, found.top1)
        if self.file is not None and self.settings.update_baselines and found.source == "measured":
            self.file.record(key.content, result_to_entry(found.result, model=name, test=test))
        self.records.append(_baseline_row(test, found, time.perf_counter() - t0))
        return found

    def _cached_top1(self, key: BaselineKey):
        if self.store is None:
            return None
        hit = self.store.get_array(TOP1_NAMESPACE, key.cache)
        return unpack_top1(hit[0], hit[1]) if hit is not None else None

    def _from_file(self, key: BaselineKey, device_type: str, settings: Settings, name: str):
        if self.file is None or self.settings.update_baselines:
            return None
        entry = self.file.get(key.content)
        if entry is None:
            if self.settings.strict:
                raise PPLCheckFailure(
                    f"baseline for {name} (corpus {settings.corpus}, seqlen {settings.seqlen or 'auto'}) is missing "
                    f"from {self.file.path} and --ppl-strict is on: run the suite once with "
                    "--ppl-update-baselines on this runner and commit the file."
                )
            return None
        want_dtype = settings.dtype if settings.dtype != "auto" else None
        if entry["device"] != device_type or (want_dtype and entry["dtype"] != want_dtype):
            msg = (f"committed baseline for {name} was measured on {entry['device']}/{entry['dtype']}, "
                   f"this run evaluates on {device_type}/{want_dtype or 'the model dtype'}: refresh it with "
                   "--ppl-update-baselines on this runner")
            if self.settings.strict:
                raise PPLCheckFailure(msg + " (--ppl-strict).")
            warnings.warn(msg + "; measuring instead.", BaselineMismatchWarning, stacklevel=3)
            return None
        return Baseline(entry_to_result(entry), "file", key, name)

    def _measure_baseline(self, model, tok, settings, key: BaselineKey, name: str) -> Baseline:
        if self.store is None:
            result = self.measure(model, tok, settings, top1=True)
            return Baseline(result, "measured", key, name, result.extra.get("top1"))
        path = self.store.path(NAMESPACE, key.cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.store.lock(path.with_suffix(".measure"), timeout=3600):
            if not self.settings.update_baselines:
                entry = self.store.get_json(NAMESPACE, key.cache)  # another worker may have just measured it
                if entry is not None:
                    return Baseline(entry_to_result(entry), "cache", key, name, self._cached_top1(key))
            result = self.measure(model, tok, settings, top1=True)
            top1 = result.extra.get("top1")
            if result.finite:
                if top1 is not None:  # written first: the baseline entry is what readers look for
                    data, meta = pack_top1(top1)
                    self.store.put_array(TOP1_NAMESPACE, key.cache, data, meta)
                self.store.put_json(NAMESPACE, key.cache, result_to_entry(result, model=name),
                                    {"kind": "baseline", "model": name})
        return Baseline(result, "measured", key, name, top1)

    # -- checks -----------------------------------------------------------------
    def check(self, model, tokenizer=None, *, baseline, budget: Budget, test: str = "", **overrides):
        from .stats import paired_delta

        settings = self.settings.with_overrides(**overrides)
        base = baseline.result if isinstance(baseline, Baseline) else baseline
        base_ppl = float(baseline)
        if not math.isfinite(base_ppl):
            raise PPLCheckFailure(f"the baseline perplexity is {base_ppl}: a baseline must be finite to compare against.")
        threshold = budget.threshold(base_ppl)
        rule, order = self._early_rule(model, base, threshold, settings)
        stop = (lambda done, nlls: rule.update(done, nlls) is not None) if rule is not None else None
        base_top1 = getattr(baseline, "top1", None)
        result = self.measure(model, tokenizer, settings, order=order, stop=stop, top1=base_top1 is not None)
        early = rule is not None and result.subset and rule.verdict in ("pass", "fail")
        measured = math.exp(rule.estimate[0]) if early else result.ppl
        finite = result.finite and math.isfinite(measured)
        row = {
            "test": test, "kind": "check", "corpus": result.corpus, "seqlen": result.seqlen,
            "protocol": result.protocol, "n_windows": result.n_windows, "n_windows_total": result.n_windows_total,
            "baseline": base_ppl, "measured": measured if finite else None,
            "delta": measured - base_ppl if finite else None, "budget": str(budget),
            "threshold": threshold, "baseline_source": getattr(baseline, "source", "given"),
            "seconds": result.seconds, "device": result.device, "dtype": result.dtype,
        }
        if early:
            est, se = rule.estimate
            row["early"] = {"decided_after": rule.decided_at, "of": rule.n_total, "confidence": rule.confidence,
                            "estimate_ppl": measured, "ln_ppl_se": se, "z": rule.z}
        if result.finite and hasattr(base, "window_index"):
            wanted = set(result.window_index)
            pairs = [(i, n, w) for i, n, w in zip(base.window_index, base.window_nll, base.window_weight) if i in wanted]
            if len(pairs) == result.n_windows:
                row["paired"] = paired_delta([p[1] for p in pairs], [p[2] for p in pairs], result.window_nll,
                                             result.window_weight, result.n_windows_total).to_dict()
        if base_top1 is not None and result.extra.get("top1"):
            from .stats import top1_agreement

            try:
                row["top1"] = top1_agreement(base_top1, result.extra["top1"])
            except ValueError:
                pass
        where = (f"corpus {result.corpus}, seqlen {result.seqlen}, {result.n_windows}/{result.n_windows_total} "
                 f"windows, protocol {result.protocol}")
        if early:
            where += (f"; early verdict after {rule.decided_at}/{rule.n_total} windows at "
                      f"{100 * rule.confidence:g}% confidence, PPL is an estimate")
        if not finite:
            row["verdict"] = "nan"
            self.records.append(row)
            raise PPLCheckFailure(
                f"ppl_check: perplexity is {result.ppl} (not finite) against baseline {base_ppl:.4f} "
                f"[{where}]. A half-precision overflow after pruning is the usual cause: evaluate in "
                "bfloat16/float32 (--ppl-dtype) or inspect the pruned layers."
            )
        passed = rule.verdict == "pass" if early else measured <= threshold
        row["verdict"] = "pass" if passed else "fail"
        self.records.append(row)
        if not passed:
            over = measured - threshold
            paired = row.get("paired")
            noise = f"; paired dPPL {paired['delta_ppl']:+.4f} ± {paired['delta_ppl_se']:.4f} (SE)" if paired else ""
            raise PPLCheckFailure(
                f"ppl_check: PPL {measured:.4f} exceeds the threshold {threshold:.4f} by {over:.4f} "
                f"(baseline {base_ppl:.4f} + budget {budget} = {threshold:.4f}; "
                f"+{measured - base_ppl:.4f}, {100 * (measured / base_ppl - 1):+.2f}% vs baseline{noise}) "
                f"[{where}]"
            )
        return result

    def plain(self, model, tokenizer=None, test: str = "", **overrides):
        settings = self.settings.with_overrides(**overrides)
        result = self.measure(model, tokenizer, settings)
        self.records.append({"test": test, "kind": "measure", "corpus": result.corpus, "seqlen": result.seqlen,
                             "protocol": result.protocol, "n_windows": result.n_windows,
                             "n_windows_total": result.n_windows_total,
                             "measured": result.ppl if result.finite else None, "seconds": result.seconds,
                             "verdict": "measured" if result.finite else "nan"})
        return result


def _baseline_row(test: str, found: Baseline, seconds: float) -> dict:
    r = found.result
    return {"test": test, "kind": "baseline", "corpus": r.corpus, "seqlen": r.seqlen, "protocol": r.protocol,
            "n_windows": r.n_windows, "n_windows_total": r.n_windows_total,
            "baseline": r.ppl if math.isfinite(r.ppl) else None, "baseline_source": found.source,
            "seconds": seconds, "model": found.model, "verdict": "baseline", "device": r.device, "dtype": r.dtype}


def _model_device(model) -> str:
    from .engine import input_device

    return str(input_device(model))


def _model_dtype(model) -> str:
    from .engine import _param_dtype

    return str(_param_dtype(model)).replace("torch.", "")


def load_file(settings: Settings) -> BaselinesFile | None:
    """The committed file, validated now (so a malformed one is a start-up error)."""
    if not settings.baselines:
        return None
    return BaselinesFile(settings.baselines).load(must_exist=settings.strict and not settings.update_baselines)
