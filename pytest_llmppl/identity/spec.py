"""What a number is: ``MeasurementSpec``, built once per fixture call, and what it is built from.

A perplexity depends on the weights, the tokenizer, the corpus *content*, the protocol
(seqlen, stride, window subset), where and how it runs (device type, evaluation dtype,
attention implementation) and the software (torch, transformers, our protocol
version).  The spec holds exactly these; memory, the local cache, the committed file,
the baseline/check compatibility test and the early-stop rule all read it, and
nothing re-derives it from names or paths.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .fingerprint import digest

PROTOCOL_VERSION = 2  # bump when a number we compute for the same inputs changes
# What a baseline and its check must share: otherwise their windows are unrelated.
COMPARABLE = ("tokenizer", "corpus", "seqlen", "protocol", "stride", "max_windows")
# Where and with what it ran: part of the cache key, recorded in the committed file, where the
# device type is spelled "device".  The file keys the first two (a suite that asks for a float32
# and a bfloat16 number of one model needs both entries), not the software it ran with.
RUNTIME = ("device_type", "dtype", "attn_implementation", "torch", "transformers", "protocol_version",
           "matmul_precision", "sdpa_backends")
FILE_KEYED_RUNTIME = ("device_type", "dtype")
_ENTRY_NAME = {"device_type": "device"}
# A committed entry's names for the fields of the file key (fingerprints spelled out).
ENTRY_KEY_FIELDS = {"model": "model_fingerprint", "tokenizer": "tokenizer_fingerprint", "corpus": "corpus_sha256",
                    "seqlen": "seqlen", "protocol": "protocol", "stride": "stride", "max_windows": "max_windows",
                    "device_type": "device", "dtype": "dtype"}


@dataclass(frozen=True)
class MeasurementSpec:
    """Everything one perplexity number depends on.  ``key`` addresses the cache;
    ``file_key`` (without the software it ran with) addresses the committed file."""

    model: str
    tokenizer: str
    corpus: str  # SHA-256 of the corpus text, never its path
    seqlen: int
    protocol: str
    stride: int | None
    max_windows: int | None
    device_type: str
    dtype: str
    attn_implementation: str
    torch: str
    transformers: str
    protocol_version: int = PROTOCOL_VERSION
    # How torch rounds this run's matmuls where it may trade precision for speed (``matmul_precision``).
    matmul_precision: str = "ieee"
    # Which kernels attention may choose from (``sdpa_backends``).
    sdpa_backends: str = "all"
    # The software that splits the corpus (``tokenizing_software``): the same pipeline may split a
    # text otherwise in another version.  In the store's key, not the committed file's.
    tokenizing: str = ""
    # For messages only: not part of the identity.
    corpus_name: str = field(default="", compare=False)
    n_windows_total: int = field(default=0, compare=False)
    # Why the model's function could not be pinned down (a hook of unknown kind): measured, never served.
    unpinned: str = field(default="", compare=False)
    # What the model keeps (``size_facts.SizeFacts``): counted from the live model, not part of the key.
    size: Any = field(default=None, compare=False)

    @classmethod
    def identify(cls, model: Any, tokenizer: Any, tokenizer_fp: str | None = None, **settings: Any) -> MeasurementSpec:
        """The identity of measuring ``model`` with ``tokenizer`` under ``settings`` (the spec's
        other fields): the model's (everything its forward reads, ``model_identity``), the
        tokenizer's content (``tokenizer_fp`` when known) and the software's, in one visit."""
        from .fingerprint import tokenizer_fingerprint
        from .model_identity import model_identity

        found = model_identity(model)
        versions = software_versions()
        return cls(model=found.digest, tokenizer=tokenizer_fp or tokenizer_fingerprint(tokenizer),
                   torch=versions["torch"], transformers=versions["transformers"], unpinned=found.unpinned,
                   size=found.size, matmul_precision=matmul_precision(settings["device_type"], settings["dtype"]),
                   sdpa_backends=sdpa_backends(), tokenizing=tokenizing_software(), **settings)

    @property
    def key(self) -> str:
        return digest("measurement", *(getattr(self, f) for f in _KEYED))

    @property
    def file_key(self) -> str:
        return file_key({f: getattr(self, f) for f in ENTRY_KEY_FIELDS}, self.protocol_version)

    @property
    def weights_key(self) -> str:
        """The file key without device type and dtype (a 0.2 file's key): the same model and
        settings measured elsewhere."""
        return weights_key({f: getattr(self, f) for f in ENTRY_KEY_FIELDS}, self.protocol_version)

    @property
    def model_id(self) -> str:
        """A short hash of the weights, to tell models apart in reports."""
        return self.model[:8]

    @property
    def n_windows(self) -> int:
        total = self.n_windows_total
        return min(total, self.max_windows) if self.max_windows else total

    def describe(self, contents: bool = False) -> str:
        """``seqlen 64, corpus wiki.txt, 5/53 windows, protocol torch-pruning``; ``contents`` adds
        the tokenizer and corpus fingerprints (two sides that differ only there look alike)."""
        text = (f"seqlen {self.seqlen}, corpus {short_name(self.corpus_name)}, "
                f"{self.n_windows}/{self.n_windows_total} windows, protocol {self.protocol}")
        if self.stride is not None:
            text += f", stride {self.stride}"
        if contents:
            text += f", tokenizer {self.tokenizer[:8]}, corpus content {self.corpus[:8]}"
        return text

    def mismatch(self, other: MeasurementSpec) -> list[str]:
        """The comparable fields on which ``other`` differs (tokenizer and corpus by content)."""
        return [name for name in COMPARABLE if getattr(self, name) != getattr(other, name)]

    def runtime_differences(self, other: MeasurementSpec) -> dict[str, tuple[Any, Any]]:
        """Runtime fields (entry names) on which ``other`` differs: name -> (other's, ours)."""
        return {_ENTRY_NAME.get(n, n): (getattr(other, n), getattr(self, n)) for n in RUNTIME
                if getattr(self, n) != getattr(other, n)}

    def runtime_entry(self) -> dict[str, Any]:
        """The runtime fields as a committed entry records them; the matmul precision and the
        attention kernels only where they are not torch's default (so a refresh under the default
        leaves older entries as they were)."""
        out = {_ENTRY_NAME.get(n, n): getattr(self, n) for n in RUNTIME}
        if self.matmul_precision == default_matmul_precision(self.device_type, self.dtype):
            del out["matmul_precision"]
        if self.sdpa_backends == "all":
            del out["sdpa_backends"]
        return out

    def with_runtime(self, entry: dict[str, Any]) -> MeasurementSpec:
        """This spec as recorded elsewhere (a committed entry's device, dtype, versions; a matmul
        precision or attention kernels it does not name are the defaults)."""
        fields = {n: entry[_ENTRY_NAME.get(n, n)] for n in RUNTIME if _ENTRY_NAME.get(n, n) in entry}
        fields.setdefault("matmul_precision", default_matmul_precision(fields.get("device_type", self.device_type),
                                                                      fields.get("dtype", self.dtype)))
        fields.setdefault("sdpa_backends", "all")
        return dataclasses.replace(self, **fields)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["size"] = self.size.to_json() if self.size is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MeasurementSpec:
        values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        if values.get("size") is not None:
            from .size_facts import SizeFacts

            values["size"] = SizeFacts.from_json(values["size"])
        return cls(**values)


_KEYED = tuple(f.name for f in dataclasses.fields(MeasurementSpec) if f.compare)


def weights_key(fields: dict[str, Any], protocol_version: int) -> str:
    """Weights, tokenizer, corpus content and the comparable settings (``fields`` by spec names)."""
    return digest("baseline", protocol_version, fields["model"], *(fields[f] for f in COMPARABLE))


def file_key(fields: dict[str, Any], protocol_version: int) -> str:
    return digest("baseline", protocol_version, fields["model"], *(fields[f] for f in COMPARABLE),
                  *(fields[f] for f in FILE_KEYED_RUNTIME))


def entry_keys(entry: dict[str, Any]) -> tuple[str | None, str]:
    """(file key, weights key) of a committed entry; a 0.2 entry names no fingerprints, so it
    has no file key (it is found by its weights key, the key it was written under)."""
    if not all(name in entry for name in ENTRY_KEY_FIELDS.values()):
        return None, ""
    fields = {f: entry[name] for f, name in ENTRY_KEY_FIELDS.items()}
    pv = entry.get("protocol_version", PROTOCOL_VERSION)
    return file_key(fields, pv), weights_key(fields, pv)


def short_name(name: str) -> str:
    """A path by its last component (reports keep it whole); a name such as a hub id as is."""
    import os

    is_path = (os.sep in name or "/" in name) and os.path.exists(name)
    return os.path.basename(name.rstrip("/\\")) if is_path else name


@functools.cache
def package_version(name: str) -> str:
    """Installed version without importing the package ("none" when absent); read once a process
    (each read scans the installed distributions: about a millisecond)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def software_versions() -> dict[str, str]:
    return {"torch": package_version("torch"), "transformers": package_version("transformers")}


def tokenizing_software() -> str:
    """The software that splits a text (transformers, and the libraries it splits with): a token
    cache entry or a stored result made with another is a miss."""
    return ", ".join(f"{name} {package_version(name)}" for name in ("transformers", "tokenizers", "sentencepiece"))


def default_matmul_precision(device_type: str, dtype: str) -> str:
    """``matmul_precision`` when nothing was set."""
    if dtype in ("bfloat16", "float16") and device_type == "cuda":
        return "reduced"
    return "ieee" if dtype == "float32" else "default"


def matmul_precision(device_type: str, dtype: str) -> str:
    """How torch rounds this run's matmuls where a setting lets it trade precision for speed:
    float32 ones at ``ieee`` (the default), ``tf32`` or ``bf16``
    (``torch.set_float32_matmul_precision``, ``torch.backends.*.fp32_precision``); on CUDA,
    half-precision ones with ``reduced`` (the default) or ``full`` reductions; else ``default``.
    A process-wide setting that changes the number: a result measured under one is not served
    from the store under another."""
    import torch

    if dtype in ("bfloat16", "float16") and device_type == "cuda":
        reduced = getattr(torch.backends.cuda.matmul, f"allow_{'bf16' if dtype == 'bfloat16' else 'fp16'}"
                                                       "_reduced_precision_reduction", True)
        return "reduced" if reduced else "full"
    if dtype != "float32":
        return "default"  # nothing chooses it
    backend = {"cuda": torch.backends.cuda, "cpu": torch.backends.mkldnn}.get(device_type)
    chosen = getattr(getattr(backend, "matmul", None), "fp32_precision", None)
    if not isinstance(chosen, str):  # another device type: the process-wide setting
        chosen = getattr(torch.backends, "fp32_precision", None)
    if isinstance(chosen, str):  # torch >= 2.9: each backend's own, set by either API
        return "ieee" if chosen == "none" else chosen
    legacy = torch.get_float32_matmul_precision()  # older torch: one process-wide setting
    return {"highest": "ieee", "high": "tf32"}.get(legacy, "bf16" if device_type == "cpu" else "tf32")


def sdpa_backends() -> str:
    """Which kernels ``scaled_dot_product_attention`` may choose from (``torch.nn.attention.sdpa_kernel``
    narrows them, ``torch.backends.cuda.enable_*_sdp`` turns one off, on every device type):
    ``all``, or those enabled.  Another kernel is another number (in bfloat16 beyond batching noise)."""
    import torch

    flags = [(name, getattr(torch.backends.cuda, f"{name}_sdp_enabled", None))
             for name in ("cudnn", "flash", "math", "mem_efficient")]
    known = [(name, flag) for name, flag in flags if callable(flag)]
    enabled = [name for name, flag in known if flag()]
    return "all" if len(enabled) == len(known) else ",".join(enabled) or "none"
