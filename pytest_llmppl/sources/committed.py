"""The committed file's entries: a baseline, or a recorded check, with this very identity.

First in the chain, so a verdict does not depend on which tests ran before; under
``--ppl-strict`` it is a baseline's only source, and a baseline it lacks fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BaselineMismatchWarning, PPLFailure, warn_at_user
from ..judge.records import Source
from .served import Served, unpinned

if TYPE_CHECKING:
    from ..keep.recording import Recording
    from ..measure.call import Call
    from ..measure.perplexity_result import PerplexityResult
    from .reference import Divergences


class Committed:
    """``enrich`` adds what the file does not keep (the argmax, the dense top-k) from memory or the store."""

    def __init__(self, recording: Recording, strict: bool, divergences: Divergences,
                 enrich: Callable[[PerplexityResult, Call], PerplexityResult]):
        self.recording = recording
        self.file = recording.file
        self.strict = strict
        self.divergences = divergences
        self.enrich = enrich

    refuses = staticmethod(unpinned)

    def serve(self, call: Call) -> Served | None:
        """A baseline's miss is explained: measured on another device type or dtype (a warning;
        a failure under ``--ppl-strict``), or missing under ``--ppl-strict`` (a failure)."""
        hit = self.file.find(call.identity)
        if hit.entry is None:
            self._miss(call, hit.elsewhere)
            return None
        if hit.key is not None:
            self.file.used.add(hit.key)
        call.learn_windows(hit.entry["n_windows_total"])
        self.divergences.remember_recorded(call, hit.entry.get("kl"))
        notes = self._runtime_notes(call, hit.entry)
        from ..keep.entries import entry_result

        return Served(self.enrich(entry_result(hit.entry, call.spec), call), Source.FILE, notes)

    def _miss(self, call: Call, elsewhere: tuple[dict[str, Any], ...]) -> None:
        if not call.is_baseline:
            return
        if elsewhere:
            entry = elsewhere[0]
            msg = (f"committed baseline for {call.model_name} was measured on {entry['device']}/{entry['dtype']}, "
                   f"this run evaluates on {call.spec.device_type}/{call.spec.dtype}: refresh it with "
                   "--ppl-update-baselines on this runner")
            if self.strict:
                raise PPLFailure(msg + " (--ppl-strict).")
            warn_at_user(msg + "; measuring instead.", BaselineMismatchWarning)
        elif self.strict:
            raise PPLFailure(self.recording.missing_message(call, call.test))

    @staticmethod
    def _runtime_notes(call: Call, entry: dict[str, Any]) -> tuple[str, ...]:
        """Software the entry was recorded with that differs from this run's (a baseline also warns)."""
        differ = call.spec.runtime_differences(call.spec.with_runtime(entry))
        kind = "baseline" if call.is_baseline else "result"
        notes = tuple(f"committed {kind} recorded with {name} {was}, this run has {now}"
                      for name, (was, now) in differ.items())
        if notes and call.is_baseline:
            warn_at_user(f"{call.model_name}: {'; '.join(notes)} (numbers may differ slightly; refresh with "
                         "--ppl-update-baselines)", BaselineMismatchWarning)
        return notes
