"""Every result is cached by its identity: an unchanged model is judged with zero forwards."""

from __future__ import annotations

import json

import pytest
import torch

from plugin_support import INI, failures, forwards, project, rows

SUITE = """
import os, torch
from conftest import damage

def test_guard(model, tok, ppl_baseline, ppl_check, ppl_of):
    base = ppl_baseline(model, tok)
    damage(model, 0.2)
    if os.environ.get("TWEAK"):  # a refactor that changes one weight of the pruned model
        with torch.no_grad():
            model.lm_head.weight[7, 3] += 1e-3
    ppl_check(model, tok, baseline=base, budget="1000%")
    ppl_of(model, tok)
"""


def test_second_run_serves_everything_with_zero_forwards(pytester, monkeypatch):
    project(pytester, SUITE)
    fixed = "--ppl-batch-size=4"  # 35 forwards per evaluation of the 140 windows
    pytester.runpytest("--ppl-report=report.json", fixed).assert_outcomes(passed=1)
    (b,), (c,), (m,) = rows(pytester, "baseline"), rows(pytester, "check"), rows(pytester, "measure")
    assert (b["baseline_source"], c["measured_source"], m["measured_source"]) == ("measured", "measured", "memory")
    assert forwards(pytester) == 2 * 35  # baseline and check; ppl_of of the same model: from memory

    second = pytester.runpytest("--ppl-report=report.json", fixed)
    second.assert_outcomes(passed=1)
    assert forwards(pytester) == 0  # counted by a hook on the model, not inferred from timing
    (b2,), (c2,) = rows(pytester, "baseline"), rows(pytester, "check")
    assert (b2["baseline_source"], c2["baseline_source"], c2["measured_source"]) == ("cache", "cache", "cache")
    assert c2["measured"] == c["measured"] and c2["paired"] == c["paired"] and c2["top1"] == c["top1"]
    second.stdout.fnmatch_lines(["*test_guard*PASS*cache/cache*"])

    monkeypatch.setenv("TWEAK", "1")  # one changed weight: only the check is measured again
    pytester.runpytest("--ppl-report=report.json", fixed).assert_outcomes(passed=1)
    (b3,), (c3,) = rows(pytester, "baseline"), rows(pytester, "check")
    assert b3["baseline_source"] == "cache" and c3["measured_source"] == "measured"
    assert c3["model_id"] != c2["model_id"] and c3["measured"] != c2["measured"]
    assert forwards(pytester) == 35

    monkeypatch.delenv("TWEAK")
    monkeypatch.setenv("FAKE_TORCH_VERSION", "9.9.9")  # a torch upgrade misses the cache: both re-measured
    pytester.runpytest("--ppl-report=report.json", fixed).assert_outcomes(passed=1)
    (b4,), (c4,) = rows(pytester, "baseline"), rows(pytester, "check")
    assert (b4["baseline_source"], c4["measured_source"]) == ("measured", "measured")
    assert forwards(pytester) == 2 * 35

    monkeypatch.setenv("FAKE_TOKENIZERS_VERSION", "9.9.9")  # so does a tokenizers upgrade alone
    pytester.runpytest("--ppl-report=report.json", fixed).assert_outcomes(passed=1)
    (b5,), (c5,) = rows(pytester, "baseline"), rows(pytester, "check")
    assert (b5["baseline_source"], c5["measured_source"]) == ("measured", "measured")
    assert forwards(pytester) == 2 * 35


def test_remeasure_and_no_cache_always_measure(pytester):
    project(pytester, SUITE)
    pytester.runpytest().assert_outcomes(passed=1)
    forwards(pytester)
    pytester.runpytest("--ppl-report=report.json", "--ppl-remeasure").assert_outcomes(passed=1)
    assert {rows(pytester, "check")[0]["measured_source"], rows(pytester, "baseline")[0]["baseline_source"]} == {
        "measured"}
    assert forwards(pytester) > 0
    pytester.runpytest("--ppl-report=report.json", "--ppl-no-cache", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert rows(pytester, "check")[0]["measured_source"] == "measured"


def test_failure_served_from_cache_says_so(pytester, plugin_args):
    project(pytester, SUITE.replace('budget="1000%"', 'budget="1%"'))
    pytester.runpytest(*plugin_args).assert_outcomes(failed=1)
    again = pytester.runpytest(*plugin_args)
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["*exceeds the threshold*served from cache, identical weights*"])
    text = again.stdout.str()
    assert "During handling of the above exception" not in text and failures(again).count("exceeds the threshold") == 1


MISMATCH = """
def check_against(model, tok, ppl_baseline, ppl_check, base_kw, check_kw):
    base = ppl_baseline(model, tok, **base_kw)
    ppl_check(model, tok, baseline=base, budget="1000%", **check_kw)

def test_seqlen(model, tok, ppl_baseline, ppl_check):
    check_against(model, tok, ppl_baseline, ppl_check, dict(max_windows=10), dict(max_windows=10, seqlen=64))

def test_corpus(model, tok, ppl_baseline, ppl_check):
    check_against(model, tok, ppl_baseline, ppl_check, dict(max_windows=10), dict(max_windows=10, corpus={other!r}))

def test_protocol(model, tok, ppl_baseline, ppl_check):
    check_against(model, tok, ppl_baseline, ppl_check, dict(max_windows=10), dict(max_windows=10, protocol="tokens"))

def test_subset(model, tok, ppl_baseline, ppl_check):
    check_against(model, tok, ppl_baseline, ppl_check, dict(max_windows=5), dict(max_windows=10))

def test_stride(model, tok, ppl_baseline, ppl_check):
    check_against(model, tok, ppl_baseline, ppl_check, dict(protocol="sliding", stride=64, max_windows=4),
                  dict(protocol="sliding", stride=32, max_windows=4))

def test_tokenizer(model, tok, ppl_baseline, ppl_check):
    import copy
    other = copy.deepcopy(tok)
    other.add_tokens(["qqzzxq"])  # another tokenizer; the corpus tokenizes the same
    base = ppl_baseline(model, tok, max_windows=10)
    ppl_check(model, other, baseline=base, budget="1000%", max_windows=10)
"""


def test_a_baseline_measured_differently_is_an_error(pytester, tmp_path, plugin_args):
    from conftest import CORPUS_TXT

    other = tmp_path / "other.txt"
    other.write_text(CORPUS_TXT.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    project(pytester, MISMATCH.format(other=str(other)))
    result = pytester.runpytest("--ppl-report=report.json", *plugin_args)
    result.assert_outcomes(failed=6)
    text = result.stdout.str()
    assert failures(result).count("the baseline was measured differently") == 6 and "ppl_check: PPL" not in text
    assert rows(pytester, "check") == []  # never a verdict
    if plugin_args:
        return  # failures are reported in completion order under xdist
    result.stdout.fnmatch_lines([
        "*(seqlen differs)*baseline: seqlen 128, corpus test.txt, 10/140 windows*"
        "this check: seqlen 64, corpus test.txt,"
        " 10/28? windows*",
        "*(corpus differs)*this check: seqlen 128, corpus other.txt*",
        "*(protocol differs)*",
        "*(max_windows differs)*baseline: seqlen 128, corpus test.txt, 5/140 windows*this check:*10/140 windows*",
        "*(stride differs)*stride 64*stride 32*",
        # two sides that differ only in content show their fingerprints
        "*(tokenizer differs)*baseline: *, tokenizer ????????, corpus content ????????; "
        "this check: *, tokenizer ????????, corpus content ????????.*",
    ])


@pytest.mark.parametrize("per_call", ["auto", "cpu"])
def test_auto_device_and_the_resolved_device_share_one_key(pytester, per_call, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # "auto" is the CPU here, on any machine
    suite = f"""
def test_a(model, tok, ppl_of):
    ppl_of(model, tok, device="cpu", max_windows=6)

def test_b(model, tok, ppl_of):
    ppl_of(model, tok, device={per_call!r}, max_windows=6)
"""
    project(pytester, suite)
    pytester.runpytest("--ppl-report=report.json").assert_outcomes(passed=2)
    sources = [r["measured_source"] for r in rows(pytester, "measure")]
    assert sources == ["measured", "memory"]
    pytester.runpytest("--ppl-report=report.json", "--ppl-device=auto").assert_outcomes(passed=2)
    assert [r["measured_source"] for r in rows(pytester, "measure")] == ["cache", "memory"]


def test_cache_dir_option(pytester, tmp_path):
    project(pytester, SUITE)
    where = tmp_path / "elsewhere"
    pytester.runpytest(f"--ppl-cache-dir={where}").assert_outcomes(passed=1)
    assert list(where.glob("results/*/*.entry")) and list(where.glob("tokens/*/*.entry"))
    assert list(where.glob("top1/*/*.entry"))


PRECISION = """
import os, torch

def test_check(model, tok, ppl_check):
    matmul, before = torch.backends.mkldnn.matmul, torch.backends.mkldnn.matmul.fp32_precision
    if os.environ.get("PRECISION"):  # a suite that lets torch round float32 matmuls through bfloat16
        matmul.fp32_precision = os.environ["PRECISION"]
    try:
        ppl_check(model, tok, baseline=100.0)
    finally:
        matmul.fp32_precision = before
"""


def test_a_float32_matmul_precision_is_part_of_the_identity(pytester, monkeypatch):
    """``torch.set_float32_matmul_precision("medium")`` (here its per-backend spelling) rounds a
    CPU's float32 matmuls through bfloat16 (on CPUs with AMX, it changes the number): a result
    measured at full precision is not served from the store to a run at another, and the committed
    file names a precision other than the default."""
    from pytest_llmppl import evaluate
    from pytest_llmppl.identity.spec import matmul_precision

    project(pytester, PRECISION, ini=INI + "ppl_max_windows = 24\n")
    store = ("--ppl-report=report.json", "-p", "no:cacheprovider")
    for run, source in (("", "measured"), ("", "cache"), ("bf16", "measured"), ("bf16", "cache")):
        monkeypatch.setenv("PRECISION", run)  # "" is torch's default
        pytester.runpytest(*store).assert_outcomes(passed=1)
        (check,) = rows(pytester, "check")
        assert check["measured_source"] == source and (forwards(pytester) > 0) == (source == "measured"), run
        if run and source == "measured":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from conftest import CORPUS_TXT, TINY

            matmul = torch.backends.mkldnn.matmul
            matmul.fp32_precision = "bf16"
            try:
                assert matmul_precision("cpu", "float32") == "bf16"
                true = evaluate(AutoModelForCausalLM.from_pretrained(TINY), AutoTokenizer.from_pretrained(TINY),
                                str(CORPUS_TXT), 128, max_windows=24).ppl
            finally:
                matmul.fp32_precision = "none"
            assert check["measured"] == pytest.approx(true, rel=1e-9)
    assert matmul_precision("cpu", "float32") == "ieee" and matmul_precision("cpu", "bfloat16") == "default"

    path = pytester.path / "ppl-baselines.json"
    monkeypatch.setenv("PRECISION", "")
    pytester.runpytest(*store, f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    ((entry,),) = json.loads(path.read_text())["checks"].values()  # test id -> its checks
    assert "matmul_precision" not in entry  # torch's default: entries of older versions stay as they were
    monkeypatch.setenv("PRECISION", "bf16")
    result = pytester.runpytest(*store, f"--ppl-baselines={path}", "--ppl-no-cache")
    result.assert_outcomes(passed=1)
    (check,) = rows(pytester, "check")
    assert check["measured_source"] == "file"
    assert "committed result recorded with matmul_precision ieee, this run has bf16" in check["notes"]
    pytester.runpytest(*store, f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
    ((entry,),) = json.loads(path.read_text())["checks"].values()
    assert entry["matmul_precision"] == "bf16"


def test_the_matmul_precision_is_read_per_device_type_and_dtype():
    """What each setting means for the run's device type and dtype (read from torch's flags, so
    the CUDA cases hold on a CPU-only build too)."""
    from pytest_llmppl.identity.spec import default_matmul_precision, matmul_precision

    cuda = torch.backends.cuda.matmul
    assert [matmul_precision(d, t) for d, t in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "bfloat16"),
                                                ("cpu", "bfloat16"))] == ["ieee", "ieee", "reduced", "default"]
    assert all(matmul_precision(d, t) == default_matmul_precision(d, t)
               for d in ("cpu", "cuda", "mps") for t in ("float32", "bfloat16", "float16"))
    cuda.fp32_precision = "tf32"
    try:
        assert (matmul_precision("cuda", "float32"), matmul_precision("cpu", "float32")) == ("tf32", "ieee")
    finally:
        cuda.fp32_precision = "none"
    cuda.allow_bf16_reduced_precision_reduction = False
    try:
        assert (matmul_precision("cuda", "bfloat16"), matmul_precision("cuda", "float16")) == ("full", "reduced")
    finally:
        cuda.allow_bf16_reduced_precision_reduction = True


AUTOCAST = """
import contextlib, os, torch

def test_check(model, tok, ppl_check):
    outer = torch.autocast("cpu", dtype=torch.bfloat16) if os.environ.get("AUTOCAST") else contextlib.nullcontext()
    with outer:  # the forward runs within it: a bfloat16 measurement
        ppl_check(model, tok, baseline=100.0)
"""


def test_an_autocast_around_the_call_is_the_measurements_dtype(pytester, monkeypatch):
    """A float32 model checked inside ``torch.autocast(bfloat16)`` is measured in bfloat16, and
    its identity says so: not served the float32 result, and the same measurement as
    ``--ppl-dtype=bfloat16``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl import evaluate

    from conftest import CORPUS_TXT, TINY

    project(pytester, AUTOCAST, ini=INI + "ppl_max_windows = 24\n")
    runs = (("", (), "measured", "float32"), ("", (), "cache", "float32"), ("1", (), "measured", "bfloat16"),
            ("1", (), "cache", "bfloat16"), ("", ("--ppl-dtype=bfloat16",), "cache", "bfloat16"),
            ("1", ("--ppl-dtype=float32", "--ppl-remeasure"), "measured", "float32"))
    measured = {}
    for autocast, args, source, dtype in runs:
        monkeypatch.setenv("AUTOCAST", autocast)
        pytester.runpytest("--ppl-report=report.json", "-p", "no:cacheprovider", *args).assert_outcomes(passed=1)
        (check,) = rows(pytester, "check")
        assert (check["measured_source"], check["dtype"]) == (source, dtype), (autocast, args)
        measured.setdefault(dtype, check["measured"])
    # float32 asked for inside the autocast: measured in float32 (the caller's autocast turned off)
    assert check["measured"] == measured["float32"] != measured["bfloat16"]
    model, tok = AutoModelForCausalLM.from_pretrained(TINY), AutoTokenizer.from_pretrained(TINY)
    true = evaluate(model, tok, str(CORPUS_TXT), 128, max_windows=24, dtype="bfloat16").ppl
    assert measured["bfloat16"] == pytest.approx(true, rel=1e-9)
    # evaluate() without a dtype runs in the caller's autocast, as it always did; with one, in that
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = [evaluate(model, tok, str(CORPUS_TXT), 128, max_windows=24, dtype=d).ppl for d in (None, "float32")]
    assert inside == [pytest.approx(true, rel=1e-9), pytest.approx(measured["float32"], rel=1e-9)]


SDPA = """
import contextlib, os, torch
from torch.nn.attention import SDPBackend, sdpa_kernel

def test_check(model, tok, ppl_check):
    kernels = sdpa_kernel([SDPBackend.MATH]) if os.environ.get("MATH_ONLY") else contextlib.nullcontext()
    with kernels:  # attention computed by another kernel: in bfloat16, another number
        ppl_check(model, tok, baseline=100.0, dtype="bfloat16")
"""


def test_the_attention_kernels_allowed_are_part_of_the_identity(pytester, monkeypatch):
    """``sdpa_kernel([SDPBackend.MATH])`` around the call makes attention take another kernel
    (in bfloat16 the number moves by about 1e-4, beyond batching noise): measured, not served,
    and named in the committed entry; the kernels allowed by default are named nowhere."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl import evaluate

    from conftest import CORPUS_TXT, TINY

    project(pytester, SDPA, ini=INI + "ppl_max_windows = 24\n")
    store = ("--ppl-report=report.json", "-p", "no:cacheprovider")
    measured = {}
    for math_only, source in (("", "measured"), ("1", "measured"), ("1", "cache"), ("", "cache")):
        monkeypatch.setenv("MATH_ONLY", math_only)
        pytester.runpytest(*store).assert_outcomes(passed=1)
        (check,) = rows(pytester, "check")
        assert check["measured_source"] == source, math_only
        measured.setdefault(math_only, check["measured"])
    path = pytester.path / "ppl-baselines.json"
    for math_only in ("1", ""):
        monkeypatch.setenv("MATH_ONLY", math_only)
        pytester.runpytest(*store, f"--ppl-baselines={path}", "--ppl-update-baselines").assert_outcomes(passed=1)
        ((entry,),) = json.loads(path.read_text())["checks"].values()
        assert entry.get("sdpa_backends") == ("math" if math_only else None)
    from pytest_llmppl.identity.spec import sdpa_backends

    assert sdpa_backends() == "all"
    with sdpa_kernel([SDPBackend.MATH]):
        assert sdpa_backends() == "math"
        true = evaluate(AutoModelForCausalLM.from_pretrained(TINY), AutoTokenizer.from_pretrained(TINY),
                        str(CORPUS_TXT), 128, max_windows=24, dtype="bfloat16").ppl
    assert measured["1"] == pytest.approx(true, rel=1e-9) and measured["1"] != pytest.approx(measured[""], rel=1e-5)
