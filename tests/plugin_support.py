"""Writes a user's project into a pytester dir: a conftest that loads the fixture model."""

from __future__ import annotations

import json

from conftest import CORPUS_TXT, TINY

# torch and transformers are imported where they are used: an xdist controller runs no test and
# counts no forward, so it starts without them (one process in three of an ``-n 2`` run).
CONFTEST = f'''
import json, os
import pytest

TINY = {str(TINY)!r}
STOCK = []  # the library's decoder-layer forward, which counts the forwards of fixture models

def pytest_configure(config):
    fake = {{name: os.environ[f"FAKE_{{name.upper()}}_VERSION"] for name in ("torch", "tokenizers")
            if os.environ.get(f"FAKE_{{name.upper()}}_VERSION")}}
    if fake:  # an upgrade, as the plugin sees it
        import pytest_llmppl.identity.spec as identity
        real = identity.package_version
        identity.package_version = lambda name: fake.get(name) or real(name)
        config.add_cleanup(lambda: setattr(identity, "package_version", real))
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the xdist controller
    from transformers.models.llama import modeling_llama
    layer = modeling_llama.LlamaDecoderLayer
    stock = layer.forward
    STOCK.append(stock)
    def counted(self, *args, **kwargs):
        # counted on the library function (a closure), not a global the patch reads: a patched
        # forward is part of the model's identity, and its count must not be
        if getattr(self.self_attn, "layer_idx", 0) == 0:
            stock.llmppl_forwards = getattr(stock, "llmppl_forwards", 0) + 1
        return stock(self, *args, **kwargs)
    layer.forward = counted
    config.add_cleanup(lambda: setattr(layer, "forward", stock))


@pytest.fixture
def model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY)


def pytest_sessionfinish(session):
    worker = getattr(session.config, "workerinput", {{}}).get("workerid", "main")
    with open(f"forwards-{{worker}}.json", "w") as fh:
        json.dump(getattr(STOCK[0], "llmppl_forwards", 0) if STOCK else 0, fh)
    if STOCK:
        STOCK[0].llmppl_forwards = 0


@pytest.fixture(scope="session")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


def damage(model, amount):
    """A stand-in for a pruning refactor: seeded noise of ``amount`` x std on every decoder
    linear layer; PPL rises with amount (0.1: +0.4%, 0.2: +1.8%, 0.3: +5.5%, 0.5: +42%)."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            for m in layer.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.add_(torch.randn(m.weight.shape, generator=g) * amount * m.weight.std())
'''

INI = f"""[pytest]
ppl_corpus = {CORPUS_TXT}
ppl_seqlen = 128
"""


def project(pytester, tests: str, ini: str = INI, **files):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".ini", pytest=ini)
    pytester.makepyfile(test_suite=tests, **files)
    return pytester


def forwards(pytester) -> int:
    """Forwards the fixture models ran in the last run (all xdist workers), read from the files
    the project's conftest wrote."""
    total = 0
    for path in pytester.path.glob("forwards-*.json"):
        total += json.loads(path.read_text())
        path.unlink()
    return total


def failures(result) -> str:
    """The output of a pytester run up to pytest's short summary: there, on CI (``CI`` set),
    pytest repeats each failure's whole message, so counting copies must stop before it."""
    return result.stdout.str().split("short test summary info")[0]


def report(pytester, name="report.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def rows(pytester, kind=None, name="report.json") -> list[dict]:
    return [r for r in report(pytester, name)["records"] if kind is None or r["kind"] == kind]
