"""The committed file in one run: a check's record and whether it can be compared, what this run
records in the file, what an xdist worker sends of it to the controller, and what the end of the
run writes (the file, or with ``--ppl-file-changes`` this shard's part of the refresh)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BaselineMismatchWarning, PPLFailure, RecordMismatchWarning, warn_at_user
from ..judge.records import AgainstRecord, plural
from ..settings import Settings
from .baselines import BaselinesFile

if TYPE_CHECKING:
    from ..identity.spec import MeasurementSpec
    from ..judge.decision import Recorded
    from ..measure.perplexity_result import PerplexityResult


@dataclass
class RunFacts:
    """What the run knows of the tests it collected and ran (the controller's, under xdist)."""

    passed: set[str] = field(default_factory=set)    # tests whose call phase passed
    seen: set[str] = field(default_factory=set)      # tests that reported at all
    finished: set[str] = field(default_factory=set)  # tests that ran to their end (teardown reported)
    to_run: set[str] = field(default_factory=set)    # every test collected to run (after deselection)
    deselected: set[str] = field(default_factory=set)  # collected, then left out (-k, a splitter)
    stopped: bool = False  # the run ended early (-x/--maxfail, an interrupt, an internal error)

    def report(self, nodeid: str, when: str, passed: bool) -> None:
        self.seen.add(nodeid)
        if when == "teardown":
            self.finished.add(nodeid)
        if when == "call" and passed:
            self.passed.add(nodeid)

    def whole_files(self, narrowed: bool) -> set[str]:
        """Test files this run collected whole (nothing deselected, not ``narrowed`` by -k, -m or
        node ids) and whose every test ran to its end (no -x/--maxfail stop, no interrupt, no
        crash): only there does a test missing from the run mean a test gone from the file."""
        if self.stopped or self.deselected or narrowed:
            return set()
        unfinished = {nodeid.split("::")[0] for nodeid in self.to_run - self.finished}
        return {nodeid.split("::")[0] for nodeid in self.seen} - unfinished


@dataclass
class Recording:
    file: BaselinesFile
    settings: Settings
    _sent: dict[str, Any] = field(default_factory=dict)  # file changes already sent to the xdist controller

    def recorded(self, call: Any, test: str, index: int) -> Recorded:
        """This check's recorded result, when it can be compared (same settings, device type and
        dtype); a missing record fails under ``--ppl-strict``, a record made with other settings
        warns (fails under strict)."""
        from ..judge.decision import Recorded
        from .entries import entry_result

        tolerance = call.settings.regression_tolerance
        if self.settings.update_baselines:
            return Recorded(None, tolerance, AgainstRecord.RECORDED)
        entry = self.file.recorded_check(test, index)
        if tolerance is None:  # the PPL comparison is off; the size guard is not
            return Recorded(None, None, AgainstRecord.OFF, entry=entry is not None,
                            size=recorded_size(entry) if entry is not None else None)
        if entry is None:
            elsewhere = self.file.recorded_elsewhere(call.identity.model, test)
            if self.settings.strict:
                raise PPLFailure(self.missing_record_message(call, test, index, elsewhere))
            if elsewhere:
                warn_at_user(f"check {index + 1} of {test} has no record, but this very candidate is recorded under "
                             f"{elsewhere} (a renamed test or parametrize id?): the regression guard is off for it "
                             "until you record it with --ppl-update-baselines (which drops the old one)",
                             RecordMismatchWarning)
            return Recorded(None, tolerance, AgainstRecord.NO_RECORD)
        here = record_settings(call.identity)
        differ = [name for name, value in here.items() if entry.get(name) != value]
        if differ:
            verb = "differs" if len(differ) == 1 else "differ"
            there = {name: entry.get(name) for name in here}
            msg = (f"check {index + 1} of {test}: its recorded result in {self.file.path.name} was measured with other "
                   f"settings ({', '.join(differ)} {verb}; recorded: {settings_text(there)}; this run: "
                   f"{settings_text(here)}), so it is not compared")
            if self.settings.strict:
                raise PPLFailure(msg + " (--ppl-strict): record it again with --ppl-update-baselines on this runner.")
            warn_at_user(msg + "; record it again with --ppl-update-baselines.", RecordMismatchWarning)
            return Recorded(None, tolerance, AgainstRecord.NOT_COMPARED, entry=True, size=recorded_size(entry))
        return Recorded(entry_result(entry, call.identity), tolerance, AgainstRecord.WITHIN,
                        same_weights=entry.get("model_fingerprint") == call.identity.model, entry=True,
                        size=recorded_size(entry))

    def missing_record_message(self, call: Any, test: str, index: int, elsewhere: str | None = None) -> str:
        why = ("" if self.file.has_checks else
               f" ({self.file.path.name} is a 0.2 file, which records baselines only)")
        msg = (f"check {index + 1} of {test} has no recorded result in {self.file.path}{why} and --ppl-strict is on: "
               "record it by running the suite once with --ppl-update-baselines on this runner, and commit the file.")
        if elsewhere:
            msg += (f" This very candidate is recorded under {elsewhere}: a renamed test or parametrize id? The "
                    "refresh records it under the new id and drops the old one.")
        return msg

    def missing_message(self, call: Any, test: str) -> str:
        """Why the committed file has no entry: what differs from the one it has for this test."""
        msg = (f"baseline for {call.model_name} ({call.spec.describe()}) is missing from {self.file.path} and "
               "--ppl-strict is on: run the suite once with --ppl-update-baselines on this runner and commit the file.")
        if self.file.older_identities():
            msg += (" The file was recorded by pytest-llmppl 0.3, whose model fingerprints no model matches now (the "
                    "identity covers everything the forward reads): one refresh brings it up to date.")
        spec = call.spec
        here = {"corpus_sha256": spec.corpus, "seqlen": spec.seqlen, "protocol": spec.protocol,
                "stride": spec.stride, "max_windows": spec.max_windows}
        for entry in self.file.entries_for_test(test):
            differ = [k.replace("_sha256", "") for k, v in here.items() if entry.get(k) != v]
            msg += (f" The file's entry for this test was recorded with another {', '.join(differ)}." if differ else
                    " The file's entry for this test was recorded for other weights or another tokenizer.")
        return msg

    def record_baseline(self, call: Any, result: PerplexityResult, test: str) -> None:
        if not result.finite:
            warn_at_user(f"baseline for {call.model_name} is {result.ppl} (not finite): not recorded in "
                          f"{self.file.path}", BaselineMismatchWarning)
            return
        from .entries import entry_for

        self.file.record(call.spec.file_key, entry_for(result, call.spec, test=test, model=call.model_name,
                                                       file_dir=self.file.folder))

    def record_check(self, call: Any, result: PerplexityResult, test: str, index: int, kl: Any = None,
                      base: PerplexityResult | None = None) -> None:
        """``--ppl-update-baselines``: record the candidate as this check's result (finite and
        complete only; checks after one that could not be recorded are not recorded either, so
        records keep their call order)."""
        if not result.finite or result.n_windows != call.spec.n_windows or \
                len(self.file.updated_checks.get(test, [])) != index:
            warn_at_user(f"check {index + 1} of {test}: PPL {result.ppl} is not a complete finite result: not "
                          f"recorded in {self.file.path}", BaselineMismatchWarning)
            return
        from .entries import entry_for

        entry = entry_for(result, call.spec, test=test, model=call.model_name, file_dir=self.file.folder)
        if kl is not None and base is not None and base.identity is not None:
            entry["kl"] = {"dense_model_fingerprint": base.identity.model, **kl.to_json()}
        self.file.record_check(test, index, entry)

    def take_changes(self) -> dict[str, Any] | None:
        """What this process recorded in or used from the committed file since it last said so:
        a worker sends it with each test's report, so a worker that crashes loses at most the
        test it was running (never what the tests before it recorded)."""
        f = self.file
        sent = self._sent
        updated = {k: e for k, e in f.updated.items() if sent.get(k) is not e}
        checks = {t: list(e) for t, e in f.updated_checks.items() if sent.get("checks " + t) != tuple(map(id, e))}
        used = sorted(k for k in f.used if ("used " + k) not in sent)
        if not (updated or checks or used):
            return None
        sent.update(updated)
        sent.update({"checks " + t: tuple(map(id, f.updated_checks[t])) for t in checks})
        sent.update({"used " + k: True for k in used})
        return {"updated": updated, "checks": checks, "used": used}

    def merge_changes(self, changes: dict[str, Any] | None) -> None:
        """Controller: a worker's file changes, as they come with its reports."""
        if not changes:
            return
        for key, entry in changes.get("updated", {}).items():
            self.file.record(key, entry)
        for test, entries in changes.get("checks", {}).items():
            self.file.updated_checks[test] = list(entries)
        self.file.used.update(changes.get("used", ()))

    def write(self, run: RunFacts, whole_files: set[str], narrowed: bool) -> list[str]:
        """End of a refresh: the file rewritten (records no test proved unused kept), or this shard's changes."""
        from .files import write_text_file

        lines: list[str] = []
        if self.settings.file_changes:
            lines.append(self._write_changes(run, narrowed))  # names as this run used them: merge names them
        elif self.settings.update_baselines:
            self.file.name_entries(run.finished, run.seen, whole_files)
            stale, stale_checks = self.file.stale(run.passed, run.seen, whole_files)
            kept = self.file.unfinished(run.to_run - run.finished)
            if kept:
                lines.append(f"llmppl kept {plural(kept, 'record')} of tests that did not run to their end (the run "
                             "stopped early: -x/--maxfail, an interrupt or a crash); a complete run removes what is "
                             "unused")
            if self.file.updated or self.file.updated_checks or stale or stale_checks:
                write_text_file(self.file.path, self.file.render(drop=stale, drop_checks=stale_checks))
                n_checks = sum(len(v) for v in self.file.updated_checks.values())
                recorded = f"{plural(len(self.file.updated), 'baseline')} and {plural(n_checks, 'check')} recorded"
                lines.append(f"llmppl baselines written to {self.file.path}: {recorded}, "
                             f"{len(stale) + len(stale_checks)} unused removed")
        return lines

    def _write_changes(self, run: RunFacts, narrowed: bool) -> str:
        """``--ppl-file-changes``: this run's part of a refresh, for ``merge`` (the file is left as it is)."""
        from .file_changes import FileChanges, file_sha256
        from .files import write_text_file

        f = self.file
        assert self.settings.file_changes is not None
        changes = FileChanges(
            file_sha256(f.path), f.updated, f.updated_checks, tuple(f.used - set(f.updated)), tuple(run.passed),
            tuple(run.seen), tuple(run.finished), None if narrowed else tuple(run.to_run | run.deselected),
            run.stopped)
        write_text_file(self.settings.file_changes, changes.to_json())
        n_checks = sum(len(v) for v in f.updated_checks.values())
        return (f"llmppl changes to {f.path.name} written to {self.settings.file_changes}: "
                f"{plural(len(f.updated), 'baseline')} and {plural(n_checks, 'check')} recorded; combine the shards "
                f"with python -m pytest_llmppl merge --baselines {f.path.name} SHARD...")

    def version_note(self) -> str | None:
        """A header line when the committed file was recorded with other torch/transformers."""
        from ..identity.spec import software_versions

        here = software_versions()
        other = sorted(v for v in self.file.recorded_versions() if v != (here["torch"], here["transformers"]))
        lines = []
        if other:
            there = ", ".join(f"torch {t} / transformers {tf}" for t, tf in other)
            lines.append(f"llmppl: baselines in {self.file.path.name} were recorded with {there}; this run has "
                         f"torch {here['torch']} / transformers {here['transformers']} (numbers may differ slightly)")
        older = self.file.older_identities()
        if older:
            lines.append(f"llmppl: {older} entr{'y' if older == 1 else 'ies'} in {self.file.path.name} carry a model "
                         "fingerprint of pytest-llmppl 0.3 (state dict, config and hooks only), which no model matches "
                         "now that the identity covers everything the forward reads: they are re-measured until you "
                         "refresh the file once with --ppl-update-baselines")
        return "\n".join(lines) or None


def recorded_size(entry: dict[str, Any]) -> Any:
    """The size facts a committed entry recorded (None before 0.4; validated on load)."""
    from ..identity.size_facts import SizeFacts

    return SizeFacts.from_json(entry["size"]) if isinstance(entry.get("size"), dict) else None


def record_settings(spec: MeasurementSpec) -> dict[str, Any]:
    """What a recorded check and this run must share to be compared (committed entries' names)."""
    return {"tokenizer_fingerprint": spec.tokenizer, "corpus_sha256": spec.corpus, "seqlen": spec.seqlen,
            "protocol": spec.protocol, "stride": spec.stride, "max_windows": spec.max_windows,
            "device": spec.device_type, "dtype": spec.dtype}


def settings_text(values: dict[str, Any]) -> str:
    shown = {"tokenizer_fingerprint": "tokenizer", "corpus_sha256": "corpus content"}
    return ", ".join(f"{shown.get(k, k)} {str(v)[:8] if k in shown else v}" for k, v in values.items()
                     if v is not None)
