"""Questions about a model that identity and measurement need before anything is evaluated:
its context length, whether it is a causal LM with loaded weights, whether a tokenizer fits
its embedding, which forward path gives exactly its own logits, where its inputs go, its
parameters' dtype and its attention implementation.  Asked here, in one room, so the engine
holds the evaluation loop alone.  Imports torch only inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelError, SettingsError, TokenizerError

# Architectures whose CausalLM forward is exactly ``lm_head(decoder(x))``.
PLAIN_HEAD_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gpt2", "opt",
    "phi3", "gemma", "starcoder2", "olmo", "olmo2",
})
# Config keys that mean the head does more than a linear layer.
HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
DEFAULT_MAX_SEQLEN = 4096


def resolve_seqlen(model, seqlen: int | None, allow_long: bool = False) -> int:
    """``seqlen`` > ``model.seqlen`` > ``min(config.max_position_embeddings, 4096)``."""
    config = getattr(model, "config", None)
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if seqlen is None:
        seqlen = getattr(model, "seqlen", None)
    if seqlen is None:
        if max_pos is None:
            raise ModelError("cannot tell the model's context length: pass seqlen=N (or --ppl-seqlen N).")
        seqlen = min(int(max_pos), DEFAULT_MAX_SEQLEN)
    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise SettingsError(f"seqlen must be an integer >= 2, got {seqlen!r}")
    if max_pos is not None and seqlen > int(max_pos) and not allow_long:
        raise ModelError(
            f"seqlen {seqlen} exceeds the model's max_position_embeddings ({max_pos}); "
            f"use seqlen <= {max_pos}, or force it with allow_long_seqlen=True (--ppl-allow-long-seqlen) "
            "if the model really extrapolates."
        )
    return seqlen


def check_causal_lm(model) -> None:
    """Refuse models that are not causal LMs or have no data, before any forward."""
    config = getattr(model, "config", None)
    name = type(model).__name__
    if getattr(config, "is_encoder_decoder", False) or any(
        s in name for s in ("MaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
    ):
        raise ModelError(
            f"{name} is not a causal language model; perplexity needs a decoder-only LM "
            "(load it with AutoModelForCausalLM)."
        )
    if getattr(model, "hf_device_map", None):
        return  # accelerate-dispatched: offloaded weights sit on "meta" and are loaded by hooks
    for pname, p in model.named_parameters():
        if p.is_meta:
            raise ModelError(
                f"parameter {pname} is on the meta device (no weights loaded): load real weights "
                "(no init_empty_weights / device_map='meta') or finish offloading before evaluating."
            )
        break


def check_vocab(model, ids) -> None:
    """Every token id must index the model's input embedding."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    if rows is None or len(ids) == 0:
        return
    top = int(ids.max())
    if top >= rows:
        raise TokenizerError(
            f"the tokenizer produced id {top} but the model's embedding has only {rows} rows: "
            "this tokenizer does not belong to this model. Pass the model's own tokenizer "
            "(or resize the model's embeddings with model.resize_token_embeddings)."
        )


def head_path(model) -> str:
    """``chunked`` when running the decoder and then the head is provably what the model's own
    forward does, else ``full`` (the model's forward, hooks and all).

    Provably: a stock transformers class of a plain-head architecture, its own ``forward``
    (not overridden on the instance, as accelerate and wrappers do), no forward hooks on the
    model or globally, a stock decoder under ``base_model_prefix`` and a plain ``nn.Linear``
    head.  PEFT models, ``torch.compile``d models, subclasses with their own forward and
    hooked models all take the full path and so give exactly their own logits.
    """
    import torch

    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_TYPES:
        return "full"
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in HEAD_EXTRAS):
        return "full"
    base = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(base, torch.nn.Module) or base is model or type(head) is not torch.nn.Linear:
        return "full"
    if not all(_stock(m) for m in (model, base, head)) or _global_hooks():
        return "full"
    return "chunked"


def _stock(module) -> bool:
    """A module whose forward is its class's own, from transformers or torch, with no hooks."""
    cls = type(module)
    if "forward" in vars(module) or not cls.__module__.startswith(("transformers.", "torch.nn.")):
        return False
    if not getattr(cls.forward, "__module__", "").startswith(("transformers.", "torch.nn.")):
        return False
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs")
    return not any(getattr(module, h, None) for h in hooks)


def _global_hooks() -> bool:
    from torch.nn.modules import module as nn_module

    return any(getattr(nn_module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks"))


def param_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    import torch

    return torch.float32


def input_device(model):
    """Where inputs go: the input embedding's device (right for device_map='auto' too)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "weight"):
        return emb.weight.device
    return next(model.parameters()).device


def attn_implementation(model: Any) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "none")


def lm_eval_max_length(model: Any, tokenizer: Any = None) -> int:
    """lm-eval's ``HFLM.max_length`` when not given: the (text) config's ``n_positions``,
    ``max_position_embeddings`` or ``n_ctx``, else the tokenizer's ``model_max_length``, else 2048."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 10**12:
        return limit
    return 2048


@dataclass(frozen=True)
class EvaluationPlan:
    """What the engine needs to know of a model before its loop, asked in one visit."""

    head_path: str  # chunked | full
    cast: Any       # the autocast dtype (a torch dtype), or None: the weights' own
    dtype: str      # what the forward runs in: "float32", "bfloat16", ...


def evaluation_plan(model: Any, ids: Any, head: str = "auto", dtype: Any = None) -> EvaluationPlan:
    """Refuse a model that is no causal LM or a tokenizer that is not its own, then say which
    forward path runs and in which dtype."""
    check_causal_lm(model)
    check_vocab(model, ids)
    cast = _autocast_dtype(model, dtype)
    return EvaluationPlan(head_path(model) if head == "auto" else head, cast,
                          str(cast or param_dtype(model)).replace("torch.", ""))


@dataclass(frozen=True)
class ModelFacts:
    """What a measurement's identity needs of a model, asked in one visit: the context length it
    is evaluated at, where its inputs go, its weights' dtype, its attention implementation."""

    seqlen: int
    input_device: Any  # a torch.device
    dtype: str
    attn_implementation: str


def describe(model: Any, seqlen: int | None, *, allow_long: bool = False, lm_eval: bool = False,
             tokenizer: Any = None) -> ModelFacts:
    """``seqlen`` resolved (``resolve_seqlen``; under the lm-eval protocol lm-eval's own default,
    ``lm_eval_max_length``), and the model's runtime facts."""
    if lm_eval and seqlen is None and getattr(model, "seqlen", None) is None:
        seqlen = lm_eval_max_length(model, tokenizer)  # lm-eval's max_length, not capped as the others are
    return ModelFacts(resolve_seqlen(model, seqlen, allow_long), input_device(model),
                      str(param_dtype(model)).replace("torch.", ""), attn_implementation(model))


def _autocast_dtype(model, dtype):
    """A lower precision than the weights' runs under autocast; a higher one is refused."""
    import torch

    if dtype is None or dtype == "auto":
        return None
    want = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    have = param_dtype(model)
    if want == have:
        return None
    if torch.finfo(want).bits > torch.finfo(have).bits:
        raise SettingsError(
            f"dtype {str(want).replace('torch.', '')} is wider than the model's weights "
            f"({str(have).replace('torch.', '')}): load the model in that dtype instead."
        )
    return want
