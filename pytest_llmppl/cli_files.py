"""``merge``, ``diff`` and ``durations``: the committed file and the reports across CI runners.

    python -m pytest_llmppl merge --baselines ppl-baselines.json shard-*/changes.json shard-*/report.json \
        --report report.json --markdown -
    python -m pytest_llmppl merge --git %O %A %B %P       # git's merge driver (see the README)
    git show main:ppl-baselines.json | python -m pytest_llmppl diff - ppl-baselines.json --markdown
    python -m pytest_llmppl durations report.json --out .test_durations
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import BaselineError, SettingsError

EXIT_CONFLICT = 1


def add_parsers(sub: Any) -> None:
    merge = sub.add_parser("merge", help="combine shards' file changes and reports; or git's merge driver (--git)")
    merge.add_argument("inputs", nargs="*", metavar="INPUT",
                       help="shards' --ppl-file-changes files and --ppl-report JSON reports (recognized by content)")
    merge.add_argument("--baselines", metavar="FILE",
                       help="the committed file the shards started from: rewritten with their changes merged")
    merge.add_argument("--out", metavar="FILE", help="write the merged committed file here instead of --baselines")
    merge.add_argument("--report", metavar="FILE", help="write the merged JSON report here")
    merge.add_argument("--markdown", metavar="FILE", help="write the merged markdown report here ('-': stdout)")
    merge.add_argument("--git", nargs="+", metavar="FILE",
                       help="BASE OURS THEIRS [NAME]: three-way merge of committed files, written to OURS "
                            "(git's merge driver: %%O %%A %%B %%P)")
    diff = sub.add_parser("diff", help="what a refresh changes in the committed file: PPL, paired Δ ± SE, KL, size")
    diff.add_argument("old", help="the committed file before ('-': read from stdin, e.g. git show main:FILE)")
    diff.add_argument("new", help="the committed file after")
    diff.add_argument("--markdown", action="store_true", help="print a markdown table (for $GITHUB_STEP_SUMMARY)")
    durations = sub.add_parser("durations", help="pytest-split's durations file from JSON reports")
    durations.add_argument("reports", nargs="+", metavar="REPORT", help="--ppl-report JSON files")
    durations.add_argument("--out", default=".test_durations", help="where (default: .test_durations)")


def run(args: Any) -> int:
    return {"merge": _merge, "diff": _diff, "durations": _durations}[args.command](args)


def _merge(args: Any) -> int:
    from .keep.files import write_text_file

    if args.git:
        if args.inputs or args.baselines or args.report or args.markdown or len(args.git) not in (3, 4):
            raise SettingsError("merge --git BASE OURS THEIRS [NAME] takes nothing else (git's %O %A %B %P)")
        from .keep.merge import merge_branches

        base, ours, theirs = (Path(p) for p in args.git[:3])
        merged = merge_branches(base, ours, theirs)
        write_text_file(ours, merged.text)
        name = args.git[3] if len(args.git) == 4 else ours.name
        for conflict in merged.conflicts:
            print(f"llmppl merge: conflict in {name}: {conflict}; ours kept: run the suite with "
                  "--ppl-update-baselines after the merge and commit the file", file=sys.stderr)
        return EXIT_CONFLICT if merged.conflicts else 0
    changes, reports = _read_inputs(args.inputs)
    if not changes and not reports:
        raise SettingsError("merge: give the shards' --ppl-file-changes files and/or --ppl-report JSON reports "
                            "(or --git BASE OURS THEIRS)")
    if changes:
        if not args.baselines:
            raise SettingsError("merge: file changes need --baselines FILE, the committed file the shards started from")
        from .keep.merge import merge_shards

        done = merge_shards(Path(args.baselines), changes)
        target = Path(args.out or args.baselines)
        write_text_file(target, done.text)
        kept = f"; {done.kept_unfinished} kept of tests that did not run to their end" if done.kept_unfinished else ""
        print(f"llmppl: {len(changes)} shards merged into {target}: {done.baselines} baselines and {done.checks} "
              f"checks recorded, {done.removed} unused removed{kept}", file=sys.stderr)
        if done.not_run:
            print(f"llmppl: {done.not_run} tests of the suite were run by none of these shards (a shard's file "
                  "missing?): their records are kept as they were", file=sys.stderr)
    if reports:
        from .report.shard_reports import merge_reports

        text, md = merge_reports(reports)
        if args.report:
            write_text_file(args.report, text)
        if args.markdown == "-":
            sys.stdout.write(md)
        elif args.markdown:
            write_text_file(args.markdown, md)
    elif args.report or args.markdown:
        raise SettingsError("merge: --report/--markdown need the shards' --ppl-report JSON reports as inputs")
    return 0


def _read_inputs(paths: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(file changes by name, reports by name), told apart by their format field."""
    from .keep.file_changes import CHANGES_FORMAT, FileChanges
    from .report.render import REPORT_FORMAT

    changes, reports = {}, {}
    for path in paths:
        data = _json(path)
        kind = data.get("format") if isinstance(data, dict) else None
        if kind == CHANGES_FORMAT:
            changes[path] = FileChanges.from_json(data, path)
        elif kind == REPORT_FORMAT:
            reports[path] = data
        else:
            raise SettingsError(f"merge: {path} is neither a --ppl-file-changes file ({CHANGES_FORMAT}) nor a "
                                f"--ppl-report JSON report ({REPORT_FORMAT})")
    return changes, reports


def _json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None


def _diff(args: Any) -> int:
    from .report.file_diff import diff_files, markdown, terminal

    if args.old == "-" and args.new == "-":
        raise SettingsError("diff: only one of OLD and NEW can come from stdin")
    old, new = (_committed(p) for p in (args.old, args.new))
    result = diff_files(old, new)
    print(markdown(result) if args.markdown else terminal(result), end="" if args.markdown else "\n")
    return 0


def _committed(path: str) -> dict[str, Any]:
    """A committed file's entries, validated as the plugin reads them (an empty file: none)."""
    from .keep.baselines import BaselinesFile

    text = sys.stdin.read() if path == "-" else _text(path)
    if not text.strip():
        return {"baselines": {}, "checks": {}}
    try:
        loaded = BaselinesFile.parse("<stdin>" if path == "-" else path, text)
    except BaselineError as exc:
        raise SettingsError(str(exc)) from None
    return {"baselines": loaded.entries, "checks": loaded.checks}


def _text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None


def _durations(args: Any) -> int:
    from .keep.files import write_text_file
    from .report.durations import durations_of

    reports = [_json(p) for p in args.reports]
    durations = durations_of(reports)
    write_text_file(args.out, json.dumps(durations, indent=1, sort_keys=True) + "\n")
    print(f"llmppl: durations of {len(durations)} tests written to {args.out} (pytest-split --durations-path)",
          file=sys.stderr)
    return 0
