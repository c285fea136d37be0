"""The GitHub-flavoured markdown report (a step summary): the verdict first, the numbers it rests
on, and per failing check its message and a chart of where the model got worse."""

from __future__ import annotations

from ..judge.records import BaselineRecord, CheckRecord, Record, Verdict, plural, signed
from .charts import MAX_CHARTS, chart, tradeoff_charts
from .render import COLUMNS, Column, number_text, shorten_middle, summary_counts, table_records, verdict_text

# What a reviewer reads in a GitHub step summary (~1,000 px): the verdict first, then the numbers
# it rests on; settings every row shares go to one line above the table instead of a column each.
MD_TEST_WIDTH = 48
SHARED = ("model", "corpus", "protocol", "seqlen", "budget")


def markdown(records: list[Record], header: str = "", outcomes: dict[str, int] | None = None) -> str:
    """A GitHub-flavoured markdown table (verdict first, test ids in code spans, pipes escaped) and,
    per failing check, its message and a mermaid chart of the NLL rise along the corpus."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = table_records(records)
    columns = [c for c in MD_COLUMNS if c.shown(rows)]
    shared = {c.header: c.cell(rows[0]) for c in columns if c.header in SHARED and rows
              and len({c.cell(r) for r in rows}) == 1}
    columns = [c for c in columns if c.header not in shared]
    icons = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "NAN": "⚠️ NaN"}
    lines = ["### pytest-llmppl perplexity checks", ""]
    for line in header.splitlines():  # one paragraph each: the settings, the versions note
        lines += [cell(line), ""]
    if shared:
        lines += [" · ".join(f"{k} **{cell(v)}**" for k, v in shared.items() if v), ""]
    lines.append("| " + " | ".join(c.header for c in columns) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|")
    for r in rows:
        shown = []
        for c in columns:
            value = c.cell(r)
            if c.header == "test":
                value = f"`{shorten_middle(value, MD_TEST_WIDTH).replace('`', '')}`"
            elif c.header == "verdict":
                value = icons.get(value, value)
            shown.append(cell(value))
        lines.append("| " + " | ".join(shown) + " |")
    lines += ["", _footer(records, outcomes or {})]
    notes = [(r.subject.test, note) for r in rows for note in r.notes if not note.startswith("waited")]
    if notes:
        lines += ["", "Notes:", *(f"- `{test}`: {cell(note)}" for test, note in notes)]
    for curve in tradeoff_charts(records):
        lines += ["", *curve]
    charted: set[tuple[str, str, tuple[float | None, ...]]] = set()
    failing = [r for r in records if isinstance(r, CheckRecord) and r.verdict is not Verdict.PASS]
    for r in failing[:MAX_CHARTS]:
        lines += ["", *_details(r, charted)]
    return "\n".join(lines) + "\n"


def _kind(r: Record) -> str:
    """The verdict cell: a check's verdict; what a baseline or plain measurement row is."""
    return verdict_text(r) if isinstance(r, CheckRecord) else ("baseline" if isinstance(r, BaselineRecord)
                                                             else "measured")


def _threshold(r: Record) -> str:
    if not isinstance(r, CheckRecord):
        return ""
    text = number_text(r.threshold)
    if r.regression_threshold is not None:
        text = f"{text} (budget) / {number_text(r.regression_threshold)} (record)"
    return text


_BY_HEADER = {c.header: c for c in COLUMNS}
MD_COLUMNS: tuple[Column, ...] = (
    Column("verdict", _kind),
    _BY_HEADER["test"], _BY_HEADER["measured"],
    Column("threshold", _threshold, numeric=True),
    *(_BY_HEADER[h] for h in ("baseline", "Δ", "recorded", "vs recorded", "params", "top-1", "KL", "budget",
                              "model", "id", "corpus", "protocol", "seqlen", "source", "seconds")),
)


def _details(r: CheckRecord, charted: set[tuple[str, str, tuple[float | None, ...]]]) -> list[str]:
    """A failing check's message, and its chart unless an identical one is already shown (two tests
    checking the same model against the same baseline)."""
    from ..judge.messages import failure_message

    worst = "; ".join(f"window {w.window}{' in ' + repr(w.heading) if w.heading else ''} "
                      f"{signed(w.delta_nll, 3)} nats/token" for w in (r.worst or r.worst_recorded))
    lines = [f"<details open><summary><code>{r.subject.test}</code>: {_kind(r)}"
             f"{': where it got worse: ' + worst if worst else ''}</summary>", "", "```text",
             failure_message(r), "```", ""]
    against, deltas = _charted_comparison(r)
    key = (r.subject.model_id, against, deltas)
    if not deltas:
        pass  # failed on size or KL alone: no perplexity to chart
    elif key not in charted:
        charted.add(key)
        lines += chart(r, against, deltas)
    else:
        lines += [f"(the same model against the same {against} as a chart above)", ""]
    return [*lines, "</details>"]


def _charted_comparison(r: CheckRecord) -> tuple[str, tuple[float | None, ...]]:
    """What a failing check's chart compares: the baseline when the budget failed, else the
    record when the regression guard did (nothing when neither did)."""
    if "budget" in r.decided_by or r.verdict is Verdict.NOT_FINITE:
        return "baseline", r.window_delta
    if "regression" in r.decided_by:
        return "record", r.window_delta_recorded
    return "", ()


def _footer(records: list[Record], outcomes: dict[str, int]) -> str:
    c = summary_counts(records)
    tests = ", ".join(f"{n} {k}" for k, n in outcomes.items() if n)
    ours = (f"checks: {c['pass']} pass, {c['fail']} fail, {c['nan']} not finite; "
            f"{plural(c['baseline'], 'baseline')} ({c['baseline_measured']} measured); "
            f"{plural(c['served_without_forward'], 'number')} served without a forward.")
    return (f"pytest: {tests}. " if tests else "") + ours
