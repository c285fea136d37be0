"""The end of a run, after the committed file: how many checks ran unguarded, and the report files."""

from __future__ import annotations

from typing import Any

from ..judge.records import AgainstRecord, Record, plural
from ..keep.files import write_text_file
from ..settings import Settings
from .markdown import markdown
from .render import json_report


def report_files(records: list[Record], settings: Settings, file: Any, outcomes: dict[str, int],
                 header: str) -> list[str]:
    """Writes ``--ppl-report`` and ``--ppl-report-md``; returns the lines for the terminal."""
    lines: list[str] = []
    if file is not None and not settings.update_baselines:
        unguarded = sum(1 for r in records if getattr(r, "against_record", None) is AgainstRecord.NO_RECORD)
        if unguarded:
            lines.append(f"llmppl: {plural(unguarded, 'check')} ran without a record in {file.path.name}: "
                         "the regression and size guards were off for them; record them with --ppl-update-baselines")
    if settings.report:
        write_text_file(settings.report, json_report(records, settings, outcomes, header))
        lines.append(f"llmppl report written to {settings.report}")
    if settings.report_md:
        write_text_file(settings.report_md, markdown(records, header, outcomes))
        lines.append(f"llmppl report written to {settings.report_md}")
    return lines
