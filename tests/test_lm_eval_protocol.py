"""``--ppl-protocol=lm-eval`` equals lm-evaluation-harness itself: its wikitext task (detokenizer,
rolling windows, metrics) run through lm-eval's own task and model classes, offline, on the
fixture's documents in the task's layout (a local JSON-lines file with a ``page`` column)."""

from __future__ import annotations

import json

import pytest

from pytest_llmppl import evaluate
from pytest_llmppl.measure.lmeval import detokenize, split_pages
from pytest_llmppl.measure.windows import plan_rolling_windows

from conftest import CORPUS_JSONL, TINY
from plugin_support import project, rows

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install lm-eval")

REL = 1e-6


@pytest.fixture(scope="module")
def pages_file(tmp_path_factory):
    """WikiText-2-style test rows cut into articles, as EleutherAI/wikitext_document_level holds them."""
    rows_ = [json.loads(line)["text"] for line in CORPUS_JSONL.read_text(encoding="utf-8").splitlines()]
    pages = split_pages("".join(rows_))
    path = tmp_path_factory.mktemp("documents") / "wikitext_pages.jsonl"
    path.write_text("".join(json.dumps({"page": p}) + "\n" for p in pages), encoding="utf-8")
    return path, pages


def lm_eval_wikitext(model, tok, pages_path, tmp_path, max_length: int, batch_size: int) -> dict:
    """lm-eval's own wikitext task, its data files pointed at ``pages_path``, through its HFLM."""
    import os

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task_yaml = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "wikitext", "wikitext.yaml")
    (tmp_path / "wikitext_local.yaml").write_text(
        f"include: {task_yaml}\ntask: wikitext_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {pages_path}\n"
        "training_split: null\nvalidation_split: null\ntest_split: test\n", encoding="utf-8")
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=max_length, device="cpu")
    tasks = TaskManager(include_path=str(tmp_path))
    out = lm_eval.simple_evaluate(model=lm, tasks=["wikitext_local"], task_manager=tasks, num_fewshot=0)
    return out["results"]["wikitext_local"]


@pytest.mark.parametrize("max_length,batch_size,pages", [(256, 1, None), (100, 4, 20)])
def test_lm_eval_protocol_equals_lm_eval_itself(pages_file, tmp_path, max_length, batch_size, pages):
    """Every document at the fixture's max length one by one; then 20 documents at a short max length
    (many windows per document) with lm-eval's batching, which pads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY)
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype="float32")
    path = pages_file[0]
    if pages:
        path = tmp_path / "some_pages.jsonl"
        path.write_text("".join(pages_file[0].read_text(encoding="utf-8").splitlines(keepends=True)[:pages]))
    theirs = lm_eval_wikitext(model, tok, path, tmp_path, max_length, batch_size)
    ours = evaluate(model, tok, str(path), max_length, protocol="lm-eval", use_cache=False)
    assert ours.lm_eval.word_perplexity == pytest.approx(theirs["word_perplexity,none"], rel=REL)
    assert ours.lm_eval.byte_perplexity == pytest.approx(theirs["byte_perplexity,none"], rel=REL)
    assert ours.lm_eval.bits_per_byte == pytest.approx(theirs["bits_per_byte,none"], rel=REL)
    assert ours.n_windows == ours.n_windows_total


def test_detokenizer_equals_the_tasks(pages_file):
    import importlib

    theirs = importlib.import_module("lm_eval.tasks.wikitext.preprocess_wikitext").wikitext_detokenizer
    tricky = "it 's the s ' 10 @,@ 000 @.@ 5 ( a ) [ b ] { c } \" d \" ' e ' = = = = x \n N y 5 \u00b0 C"
    samples = [*pages_file[1], tricky]
    for page in samples:
        assert detokenize(page) == theirs({"page": page})


def test_rolling_windows_equal_lm_eval_s():
    """Every token of every document predicted once, from the context lm-eval gives it."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    for n, seqlen in [(1, 8), (8, 8), (9, 8), (17, 8), (40, 7), (3, 100)]:
        tokens = list(range(100, 100 + n))
        stream = [0, *tokens]  # the prefix token, then the document
        ours = plan_rolling_windows([n + 1], seqlen)
        theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 0, seqlen, 1)]
        assert len(ours) == len(theirs)
        for w, (context, target) in zip(ours, theirs):
            inputs = (context + target)[-(seqlen + 1):][:-1]  # what HFLM feeds the model
            assert stream[w.start:w.end - 1] == inputs
            assert stream[w.start + w.score_from:w.end] == target


def test_lm_eval_protocol_in_pytest_reports_the_three_metrics(pytester, pages_file):
    project(pytester, """
def test_dense(model, tok, ppl_of):
    ppl_of(model, tok)
""", ini=f"[pytest]\nppl_corpus = {pages_file[0]}\nppl_seqlen = 256\nppl_protocol = lm-eval\n")
    pytester.runpytest("--ppl-report=report.json").assert_outcomes(passed=1)
    (record,) = rows(pytester, "measure")
    assert record["protocol"] == "lm-eval"
    assert set(record["lm_eval"]) == {"word_perplexity", "byte_perplexity", "bits_per_byte", "words", "bytes"}
    assert record["lm_eval"]["bytes"] == sum(len(p.encode("utf-8")) for p in pages_file[1])


def test_a_corpus_without_documents_is_refused(tiny_model, tiny_tokenizer):
    from pytest_llmppl.errors import CorpusError

    with pytest.raises(CorpusError, match="needs documents, and ptb has none"):
        evaluate(tiny_model, tiny_tokenizer, "ptb", 128, protocol="lm-eval", use_cache=False)
