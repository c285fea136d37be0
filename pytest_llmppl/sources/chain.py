"""The chain a call's result is served from, chosen once per session from the settings.

In order: the committed file (any entry with this identity), this process's memory, the local
store; then a forward (``Forward``), which always serves.  The choices:

- ``--ppl-update-baselines``: no committed file (it is being rewritten), and memory and the store
  serve only what this run measured;
- ``--ppl-strict`` with a committed file: memory and the store serve only what this run measured
  (a verdict comes from the file or from a forward on this runner);
- ``--ppl-remeasure``: neither memory nor the store, and the file for baselines only (it is what
  the suite compares against);
- ``--ppl-no-cache`` (or a store that could not be trusted): no store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..judge.records import Source
from .committed import Committed
from .forward import Forward
from .memory import Memory
from .reference import Divergences
from .served import ResultSource, Served
from .stored import Stored

if TYPE_CHECKING:
    from ..keep.recording import Recording
    from ..keep.result_store import ResultStore
    from ..measure.call import Call
    from ..measure.perplexity_result import PerplexityResult
    from ..settings import Settings


@dataclass
class Chain:
    for_baselines: list[ResultSource]
    for_results: list[ResultSource]
    forward: Forward
    memory: Memory
    results: ResultStore | None
    divergences: Divergences

    def serve(self, call: Call) -> Served | None:
        """The first source's result, with this very model's size (counted now)."""
        for source in self.for_baselines if call.is_baseline else self.for_results:
            found = source.serve(call) if not source.refuses(call) else None
            if found is not None:
                return dataclasses.replace(found, result=dataclasses.replace(found.result, size=call.spec.size))
        return None

    def obtain(self, model: Any, call: Call) -> Served:
        """Served, else measured; a served result is remembered for this process."""
        found = self.serve(call) or self.forward.measure(model, call)
        if found.source is not Source.MEASURED:
            self.memory.served(call.spec.key, found.result)
        return found

    def enrich(self, result: PerplexityResult, call: Call) -> PerplexityResult:
        """The argmax and the dense top-k a result was served without, from memory or the store
        when they hold this very identity (whatever software recorded the committed file)."""
        known = self.memory.get(call.spec.key)
        if known is None and self.results is not None:
            known = self.results.get(call.spec)
        if known is not None and known.top1 and known.window_index == result.window_index:
            result = dataclasses.replace(result, top1=known.top1)
        topk = known.topk if known is not None else None  # else read from the store when a check needs it
        if topk is not None and topk.covers(result.window_index):
            result = dataclasses.replace(result, topk=topk)
        return result

    @property
    def fresh_only(self) -> bool:
        return self.memory.fresh_only


def chain_for(settings: Settings, recording: Recording | None, results: ResultStore | None, run_id: str,
              progress: Any = None) -> Chain:
    fresh_only = recording is not None and (settings.update_baselines or settings.strict)
    memory = Memory(fresh_only)
    reusable: list[ResultSource] = [] if settings.remeasure else [memory]
    stored = Stored(results, run=run_id if fresh_only else None) if results is not None and not settings.remeasure \
        else None
    if stored is not None:
        reusable.append(stored)
    divergences = Divergences(results)
    forward = Forward(memory, results, stored, run_id, divergences, progress)
    chain = Chain([], [], forward, memory, results, divergences)
    committed: list[ResultSource] = []
    if recording is not None and not settings.update_baselines:
        committed.append(Committed(recording, settings.strict, divergences, chain.enrich))
    chain.for_baselines = committed + reusable
    chain.for_results = (committed if not settings.remeasure else []) + reusable
    return chain
