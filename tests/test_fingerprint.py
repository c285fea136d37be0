"""Weights' fingerprints: any single changed bit changes them, the same weights give the same one
in another process, and the GPU kernel equals its torch fallback exactly."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pytest_llmppl.identity.device_hash import _torch_hash, bits_hash
from pytest_llmppl.identity.model_identity import model_identity
from pytest_llmppl.identity.tensors import tensor_hash

from conftest import ROOT, TINY

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the hash kernel runs on CUDA GPUs")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.bool])
def test_any_single_element_changes_the_hash(dtype):
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(1000, generator=g) * 3).to(dtype)
    base = tensor_hash(t)
    for i in (0, 1, 511, 999):
        changed = t.clone()
        changed[i] = (changed[i].float() + 1).to(dtype) if dtype != torch.bool else ~changed[i]
        assert tensor_hash(changed) != base
    assert tensor_hash(t.clone()) == base and tensor_hash(t.view(10, 100)) == base  # content, not layout


def test_swapping_two_elements_changes_the_torch_hash():
    """Position matters (each word is mixed with its index), on every device the fallback runs on."""
    words = torch.arange(100, dtype=torch.int32)
    swapped = words.clone()
    swapped[[3, 7]] = swapped[[7, 3]]
    assert _torch_hash(words) != _torch_hash(swapped)
    assert bits_hash(words) == _torch_hash(words)  # on the CPU bits_hash is the torch path


def test_model_fingerprint_is_stable_across_processes(tiny_model):
    code = ("from transformers import AutoModelForCausalLM; "
            "from pytest_llmppl.identity.model_identity import model_identity;"
            f"print(model_identity(AutoModelForCausalLM.from_pretrained({str(TINY)!r})).digest)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == model_identity(tiny_model).digest
    with torch.no_grad():
        tiny_model.model.layers[1].mlp.down_proj.weight[5, 7] += 1e-6
    assert model_identity(tiny_model).digest != p.stdout.strip().splitlines()[-1]


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.int8])
@pytest.mark.parametrize("n", [1, 4095, 8193, (1 << 24) + 12345])
def test_kernel_equals_the_torch_fallback(dtype, n):
    from pytest_llmppl.identity.device_hash import _triton_hash, as_words

    g = torch.Generator(device="cuda").manual_seed(n)
    t = (torch.randn(n, device="cuda", generator=g) * 100).to(dtype)
    words, _ = as_words(t)
    assert _triton_hash(words) == _torch_hash(words)
    changed = words.clone()
    if changed.numel() >= 5:  # the structured change a linear hash kept
        changed[[0, 2, 4]] += torch.tensor([1, -2, 1], dtype=torch.int32, device="cuda")
        assert _triton_hash(changed) != _triton_hash(words)


@cuda
def test_cuda_and_cpu_tensors_hash_their_content_on_each_device():
    t = torch.randn(1001, dtype=torch.bfloat16)
    on_gpu = tensor_hash(t.cuda())
    assert on_gpu.startswith("fmix:") and on_gpu == tensor_hash(t.cuda().clone())
    t[1000] += 1  # in the two trailing bytes, hashed on the host
    assert tensor_hash(t.cuda()) != on_gpu


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.int8, torch.float64])
@pytest.mark.parametrize("n", [4096, 8195])
def test_zeros_are_counted_in_the_hash_pass_as_count_nonzero_does(dtype, n):
    from pytest_llmppl.identity.tensors import hash_and_zeros

    t = (torch.randn(n) * 3).to(dtype)
    t[::5] = 0
    if dtype.is_floating_point:
        t[1::5] = -0.0
    expected = n - int(torch.count_nonzero(t))
    assert hash_and_zeros(t.cuda())[1] == expected == hash_and_zeros(t)[1]


@cuda
def test_a_batch_of_tensors_hashes_and_counts_as_each_alone():
    """A model's tensors are hashed with one wait for the device: the same values as one by one."""
    from pytest_llmppl.identity.tensors import hash_and_zeros, hashes_and_zeros

    g = torch.Generator().manual_seed(1)
    tensors = [(torch.randn(n, generator=g) * (n % 3)).to(dtype).cuda()
               for n, dtype in [(4096, torch.bfloat16), (0, torch.float32), (8195, torch.int8),
                                (7, torch.float64), (1, torch.float16), (50_001, torch.float32)]]
    pairs = [(t, i % 2 == 0) for i, t in enumerate(tensors)]
    assert hashes_and_zeros(pairs) == [hash_and_zeros(t, count) for t, count in pairs]


def test_a_hashed_part_stands_for_its_own_digest_and_is_hashed_once():
    """A class description is marked ``Hashed`` rather than hashed where it is described: the
    model's digest takes it as ``digest(parts)``, as identities made before did (committed files
    stay valid), and a part that every layer shares is serialized one time."""
    import hashlib
    import json

    from pytest_llmppl.identity.fingerprint import Hashed, digest

    def plain(*parts):  # the formula: SHA-256 of the canonical JSON, the unknown by str
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
                              .encode()).hexdigest()

    class Counted:
        seen = 0

        def __str__(self):
            Counted.seen += 1
            return "counted"

    shared = Hashed([["module", "MyMLP"], {"scale": 2.0}, Counted()])
    tree = [["layer", i, ["class", "MyMLP", shared]] for i in range(3)]
    inner = plain(shared.parts)
    Counted.seen = 0
    assert digest(*tree) == plain(*[["layer", i, ["class", "MyMLP", inner]] for i in range(3)])
    assert Counted.seen == 1  # three references, one serialization
    assert repr(shared) == repr(inner) and Counted.seen == 1  # a description sorted by repr: no re-hash
