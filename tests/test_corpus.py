"""Corpus sources: files verbatim or joined like WikiText, Hugging Face layouts, named corpora."""

from __future__ import annotations

import json

import pytest

from pytest_llmppl import load_corpus
from pytest_llmppl.errors import CorpusError

from conftest import CORPUS_JSONL, CORPUS_TXT

ROWS = [json.loads(line)["text"] for line in CORPUS_JSONL.read_text(encoding="utf-8").splitlines()]
JOINED = "\n\n".join(ROWS)


def _write_parquet(path, rows, column="text"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: rows}), path)


def test_txt_is_used_verbatim():
    assert load_corpus(str(CORPUS_TXT)).text == CORPUS_TXT.read_text(encoding="utf-8") == JOINED


def test_jsonl_rows_are_joined_like_wikitext():
    assert load_corpus(str(CORPUS_JSONL)).text == JOINED


@pytest.mark.parametrize("fmt", ["parquet", "json", "arrow"])
def test_other_local_formats(tmp_path, fmt):
    rows = ROWS[:50]
    if fmt == "parquet":
        path = tmp_path / "test.parquet"
        _write_parquet(path, rows)
    elif fmt == "json":
        path = tmp_path / "test.json"
        path.write_text(json.dumps([{"text": r} for r in rows]), encoding="utf-8")
    else:
        import pyarrow as pa

        path = tmp_path / "test.arrow"
        table = pa.table({"text": rows})
        with pa.ipc.new_stream(str(path), table.schema) as writer:
            writer.write_table(table)
    assert load_corpus(str(path)).text == "\n\n".join(rows)


def test_wikitext2_loads_through_datasets_from_hf_layout(tmp_path, monkeypatch):
    """The real wikitext2 code path, served by a local folder in the hub repo's layout."""
    repo = tmp_path / "wikitext"
    _write_parquet(repo / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet", ROWS)
    _write_parquet(repo / "wikitext-2-raw-v1" / "train-00000-of-00001.parquet", ROWS[:10])
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: wikitext-2-raw-v1\n  data_files:\n"
        "  - split: test\n    path: wikitext-2-raw-v1/test-*\n"
        "  - split: train\n    path: wikitext-2-raw-v1/train-*\n---\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    corpus = load_corpus("wikitext2")
    assert corpus.text == JOINED and corpus.name == "wikitext2" and corpus.first_windows is None


def test_ptb_and_c4_are_built_like_sparsegpt(tmp_path, monkeypatch):
    ptb = tmp_path / "ptb_text_only"
    sentences = [f"sentence number {i} of the treebank" for i in range(30)]
    _write_parquet(ptb / "penn_treebank" / "test-00000-of-00001.parquet", sentences, column="sentence")
    (ptb / "README.md").write_text(
        "---\nconfigs:\n- config_name: penn_treebank\n  data_files:\n"
        "  - split: test\n    path: penn_treebank/test-*\n---\n", encoding="utf-8")
    c4 = tmp_path / "allenai" / "c4" / "en"
    c4.mkdir(parents=True)
    import gzip

    docs = [{"text": f"document {i}", "timestamp": "x", "url": "y"} for i in range(1200)]
    with gzip.open(c4 / "c4-validation.00000-of-00008.json.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(d) for d in docs))
    monkeypatch.chdir(tmp_path)
    assert load_corpus("ptb").text == " ".join(sentences)
    c = load_corpus("c4")
    assert c.text == " ".join(d["text"] for d in docs[:1100]) and c.first_windows == 256


def test_hf_generic_spec_with_column(tmp_path):
    repo = tmp_path / "myset"
    _write_parquet(repo / "data" / "validation-00000-of-00001.parquet", ["a b", "c d"], column="body")
    spec = f"hf:{repo}::validation:body"
    assert load_corpus(spec).text == "a b\n\nc d"
    with pytest.raises(CorpusError, match="no column 'text'"):
        load_corpus(f"hf:{repo}:validation")


def test_unknown_corpus_names_the_choices():
    with pytest.raises(CorpusError, match=r"unknown corpus 'wikitext3'.*wikitext2"):
        load_corpus("wikitext3")


def test_missing_file():
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus("no/such/file.parquet")


def test_offline_and_not_cached_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local 'wikitext' folder here
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-cache")
    with pytest.raises(CorpusError) as err:
        load_corpus("wikitext2")
    msg = str(err.value)
    assert "Pre-download" in msg and "load_dataset('wikitext', 'wikitext-2-raw-v1'" in msg
    assert "--ppl-corpus=" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one message, no chained traceback


def test_a_corpus_that_failed_is_not_retried_in_the_same_run(tmp_path, monkeypatch):
    """Offline, each hub load waits out its retries: a failure is remembered for the process."""
    import datasets

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for _ in range(3):
        with pytest.raises(CorpusError, match="Pre-download"):
            load_corpus("ptb")
    assert len(calls) == 1
    with pytest.raises(CorpusError, match="failed earlier in this run; not retried"):
        load_corpus("ptb")


def test_bad_hf_spec():
    with pytest.raises(CorpusError, match="expected hf:NAME:SPLIT"):
        load_corpus("hf:only")
