"""Text sources: named benchmark corpora, local files, and any Hugging Face dataset.

Each source gives one string, built exactly as the papers build it (see the
README's "Corpora" table), plus an optional limit to the first N windows (C4's 256);
or, for the lm-eval protocol, a list of documents (``load_corpus(spec, documents=True)``).
A source that failed to load is remembered for the process, so an offline hub corpus
costs its retries once, not once per test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import CorpusError
from ..identity.fingerprint import text_fingerprint


@dataclass(frozen=True)
class Corpus:
    """One evaluation text.  ``first_windows`` keeps only the first N windows (C4: 256 x seqlen tokens)."""

    name: str
    text: str
    first_windows: int | None = None
    documents: tuple[str, ...] = ()  # the lm-eval protocol's documents (``text`` is then their join)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the text (of each document, for a document corpus), computed once per corpus object."""
        if self.documents:
            import json

            return text_fingerprint("documents\n" + json.dumps(list(self.documents)))
        return text_fingerprint(self.text)


@dataclass(frozen=True)
class _HFSpec:
    path: str
    config: str | None
    split: str
    column: str = "text"
    joiner: str = "\n\n"
    first_rows: int | None = None
    first_windows: int | None = None
    data_files: dict | None = None


# The benchmark corpora, as Torch-Pruning / SparseGPT / Wanda build them.
NAMED: dict[str, _HFSpec] = {
    "wikitext2": _HFSpec("wikitext", "wikitext-2-raw-v1", "test"),
    "ptb": _HFSpec("ptb_text_only", "penn_treebank", "test", column="sentence", joiner=" "),
    "c4": _HFSpec(
        "allenai/c4", None, "validation", joiner=" ", first_rows=1100, first_windows=256,
        data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
    ),
}
_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow"}
# The lm-eval protocol's documents: lm-evaluation-harness's wikitext task reads this dataset.
DOCUMENTS: dict[str, _HFSpec] = {
    "wikitext2": _HFSpec("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test", column="page"),
}
_MEMO: dict[str, Corpus] = {}
_FAILED: dict[str, str] = {}  # spec -> the error it gave, for the rest of the process
_PATH_SUFFIXES = (".txt", ".text", ".raw", ".parquet", ".jsonl", ".json", ".arrow")


def load_corpus(spec: str, documents: bool = False) -> Corpus:
    """``wikitext2`` | ``ptb`` | ``c4`` | a ``.txt``/``.parquet``/``.jsonl``/``.json``/``.arrow``
    file | ``hf:NAME[:CONFIG]:SPLIT[:COLUMN]``.  Loaded once per process.  ``documents``: as a
    list of documents (the lm-eval protocol): ``wikitext2`` is WikiText-2's document-level test
    split, a table file gives its ``page`` column, a text file is cut at its top-level headings."""
    if not isinstance(spec, str) or not spec.strip():
        raise CorpusError(f"corpus must be a name or a path, got {spec!r}")
    key = _memo_key(spec) + (" documents" if documents else "")
    if key in _MEMO:
        return _MEMO[key]
    if key in _FAILED:
        raise CorpusError(_FAILED[key] + "\n  (this corpus failed earlier in this run; not retried)")
    try:
        corpus = _load_documents(spec) if documents else _load(spec)
    except CorpusError as exc:
        _FAILED[key] = str(exc)
        raise
    _MEMO[key] = corpus
    return corpus


def check_spec(spec: str) -> None:
    """Start-up check without loading anything: a corpus given as a path must exist, a
    name must be known, an ``hf:`` spec must parse."""
    if spec in NAMED:
        return
    if spec.startswith("hf:"):
        parse_hf_spec(spec)
        return
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() not in _PATH_SUFFIXES:
            raise CorpusError(_bad_suffix(path))
        return
    if path.suffix.lower() in _PATH_SUFFIXES or os.sep in spec or path.exists():
        raise CorpusError(f"corpus file {spec} does not exist (resolved to {path.resolve()}).")
    raise CorpusError(_unknown(spec))


def _bad_suffix(path: Path) -> str:
    return (f"corpus file {path} has an unsupported extension {path.suffix.lower()!r}: use .txt (read verbatim) "
            "or .parquet/.jsonl/.json/.arrow with a 'text' column.")


def _unknown(spec: str) -> str:
    return (f"unknown corpus {spec!r}. Use one of {', '.join(sorted(NAMED))}, a path to a "
            ".txt/.parquet/.jsonl/.json/.arrow file, or hf:NAME[:CONFIG]:SPLIT[:COLUMN].")


def _memo_key(spec: str) -> str:
    path = Path(spec)
    if path.is_file():
        st = path.stat()
        return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return spec


def _load(spec: str) -> Corpus:
    if spec in NAMED:
        hf = NAMED[spec]
        return Corpus(spec, _load_hf(hf, spec), hf.first_windows)
    if spec.startswith("hf:"):
        hf = parse_hf_spec(spec)
        return Corpus(spec, _load_hf(hf, spec), None)
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix in (".txt", ".text", ".raw"):
            return Corpus(str(path), path.read_text(encoding="utf-8"))
        if suffix in _FILE_BUILDERS:
            hf = _HFSpec(_FILE_BUILDERS[suffix], None, "train", data_files={"train": str(path)})
            return Corpus(str(path), _load_hf(hf, spec))
        raise CorpusError(_bad_suffix(path))
    if suffix in _PATH_SUFFIXES or os.sep in spec:
        raise CorpusError(f"corpus file {spec} does not exist (resolved to {path.resolve()}).")
    raise CorpusError(_unknown(spec))


def _load_documents(spec: str) -> Corpus:
    from .lmeval import split_pages

    if spec in DOCUMENTS or spec.startswith("hf:"):
        hf = DOCUMENTS[spec] if spec in DOCUMENTS else parse_hf_spec(spec)
        if spec.startswith("hf:") and len(spec[3:].split(":")) < 4:
            hf = _HFSpec(hf.path, hf.config, hf.split, column="page")
        pages = _load_rows(hf, spec)
    elif spec in NAMED:
        raise CorpusError(f"the lm-eval protocol needs documents, and {spec} has none: use wikitext2, a "
                          ".jsonl/.parquet file with a 'page' column, or hf:NAME:CONFIG:SPLIT:COLUMN.")
    else:
        path = Path(spec).expanduser()
        suffix = path.suffix.lower()
        if not path.is_file():
            return _load(spec)  # the same errors as any corpus
        if suffix in (".txt", ".text", ".raw"):
            pages = list(split_pages(path.read_text(encoding="utf-8")))
        elif suffix in _FILE_BUILDERS:
            hf = _HFSpec(_FILE_BUILDERS[suffix], None, "train", column="page", data_files={"train": str(path)})
            pages = _load_rows(hf, spec)
        else:
            raise CorpusError(_bad_suffix(path))
    name = spec if not Path(spec).is_file() else str(Path(spec).expanduser())
    return Corpus(name, "\n\n".join(pages), None, tuple(pages))


def parse_hf_spec(spec: str) -> _HFSpec:
    """``hf:NAME:SPLIT``, ``hf:NAME:CONFIG:SPLIT`` or ``hf:NAME:CONFIG:SPLIT:COLUMN``."""
    parts = spec[3:].split(":")
    if len(parts) == 2:
        name, split = parts
        return _HFSpec(name, None, split)
    if len(parts) == 3:
        name, config, split = parts
        return _HFSpec(name, config or None, split)
    if len(parts) == 4:
        name, config, split, column = parts
        return _HFSpec(name, config or None, split, column=column)
    raise CorpusError(
        f"cannot parse {spec!r}: expected hf:NAME:SPLIT, hf:NAME:CONFIG:SPLIT or "
        "hf:NAME:CONFIG:SPLIT:COLUMN (e.g. hf:wikitext:wikitext-103-raw-v1:test)."
    )


def _load_hf(hf: _HFSpec, spec: str) -> str:
    return hf.joiner.join(_load_rows(hf, spec))


def _load_rows(hf: _HFSpec, spec: str) -> list[str]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise CorpusError("the 'datasets' package is needed for this corpus: pip install datasets") from exc
    kwargs: dict[str, Any] = {"split": hf.split}
    if hf.data_files:
        kwargs["data_files"] = hf.data_files
    try:
        ds = datasets.load_dataset(hf.path, hf.config, **kwargs)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for "not here" (offline, missing, bad split)
        raise CorpusError(_unavailable_message(hf, spec, exc)) from None
    if hf.column not in ds.column_names:
        raise CorpusError(
            f"corpus {spec}: no column {hf.column!r} (columns: {', '.join(ds.column_names)}). "
            "Name the text column with hf:NAME:CONFIG:SPLIT:COLUMN."
        )
    rows = ds[hf.column] if hf.first_rows is None else ds[: hf.first_rows][hf.column]
    return [r if isinstance(r, str) else ("" if r is None else str(r)) for r in rows]


def _unavailable_message(hf: _HFSpec, spec: str, exc: Exception) -> str:
    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    call = f"datasets.load_dataset({hf.path!r}, {hf.config!r}, split={hf.split!r}"
    call += f", data_files={hf.data_files!r})" if hf.data_files else ")"
    why = "offline mode is on and it is not in the Hugging Face cache" if offline else "it could not be loaded"
    return (
        f"corpus {spec!r}: {why} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).\n"
        f"  Pre-download it where there is network: python -c \"import datasets; {call}\" "
        "and keep HF_HOME (or HF_DATASETS_CACHE) between runs;\n"
        "  or point at a local file: --ppl-corpus=path/to/test.parquet (or .jsonl/.txt)."
    )
