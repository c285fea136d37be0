"""Structured pruning of Hugging Face causal LMs with torch-pruning (extra ``[pruning]``).

The recipe is Torch-Pruning's LLM example: group L2-magnitude importance, the same ratio
for hidden size, MLP width and heads, ``lm_head`` ignored, attention heads kept whole
(head_dim unchanged, so RoPE is untouched), query heads counted per KV head for GQA,
``round_to``, ``output_transform=lambda out: out.logits``, ``use_cache=False``.

Three torch-pruning 1.6 limits are worked around, each only for the pruning call:

- ``rotate_half`` concatenates along ``dim=-1``; PyTorch records that dim unsigned
  (2**64 - 1), which torch-pruning's "is this a channel concat?" test misreads, so at
  heads = 2 x kv_heads its dependency search never ends.  A negative concat dim is read
  as what it is: the last (head) dimension, never a channel concat.
- transformers 5's sdpa attention has no ``repeat_kv``; tracing it fails at heads/kv = 3
  or 7 ("shape '[H, -1]' is invalid").  The graph is traced with eager attention.
- torch-pruning removes no heads at heads = 2 x kv_heads, nor for Qwen3 (its per-head
  q/k norms hide the heads).  The helper then removes the query heads itself: as many
  per KV head as torch-pruning removes elsewhere, the weakest by the L2 norm of their
  ``q_proj`` rows and ``o_proj`` columns, so each kept query head keeps its own KV head.

Afterwards config and attention modules are patched so the model runs and
``save_pretrained`` -> ``from_pretrained`` gives the same outputs.  A watchdog turns any
future hang into a clear error.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import ModelError, SettingsError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
TIMEOUT_ENV = "PYTEST_LLMPPL_PRUNE_TIMEOUT"
DEFAULT_TIMEOUT = 900.0  # seconds; a 70B dependency graph builds in a few minutes


def prune_causal_lm(model: Any, ratio: float, *, round_to: int = 4, example_inputs: Any = None,
                    copy_model: bool = False, timeout: float | None = None) -> Any:
    """Prune ``ratio`` of hidden channels, MLP channels and attention heads; returns the model.

    Channel counts are rounded to ``round_to`` and the pruned head count (see above).
    ``copy_model=True`` prunes a deep copy and leaves ``model`` untouched.  ``timeout``
    (seconds, default ``$PYTEST_LLMPPL_PRUNE_TIMEOUT`` or 900) bounds torch-pruning's work.
    """
    import torch

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise SettingsError(f"pruning ratio {ratio!r} is outside [0, 1): pass the share of channels and heads to "
                            "remove, e.g. 0.2")
    heads, kv_heads, head_dim = check_supported(model)
    try:
        import torch_pruning as tp
    except ImportError:
        raise ModelError("torch-pruning is not installed: pip install 'pytest-llmppl[pruning]'") from None
    if copy_model:
        model = copy.deepcopy(model)
    if ratio == 0:
        return model
    cfg = model.config
    if example_inputs is None:
        gen = torch.Generator().manual_seed(0)
        example_inputs = torch.randint(0, cfg.vocab_size, (1, 16), generator=gen).to(next(model.parameters()).device)
    num_heads = {}
    for m in _attention_modules(model):
        num_heads[m.q_proj] = heads
        num_heads[m.k_proj] = kv_heads
        num_heads[m.v_proj] = kv_heads
    # transformers refuses (on save) a Llama whose hidden size is not a multiple of its heads:
    # the hidden size is rounded to a multiple of the heads it will have, too.
    per_group = heads_to_remove(heads, kv_heads, ratio)
    round_to = math.lcm(round_to, heads - per_group * (kv_heads if kv_heads < heads else 1))
    # Hidden-size RMSNorm weights are bare parameters that follow the hidden size (dim 0);
    # Qwen3's per-head q/k norms (size head_dim) are not.
    norms = [(m.weight, 0) for m in model.modules()
             if type(m).__name__.endswith("RMSNorm") and m.weight.numel() == cfg.hidden_size]
    # Per-head q/k norms follow the head dimension, which is never pruned: named (so torch-pruning
    # does not guess a dimension and warn) and ignored.
    head_norms = [m.weight for m in model.modules() if type(m).__name__.endswith("RMSNorm")
                  and m.weight.numel() == head_dim != cfg.hidden_size]
    with _tracing(model), _watchdog(_timeout(timeout)):
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs={"input_ids": example_inputs, "use_cache": False},
            importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
            global_pruning=False,
            pruning_ratio=ratio,
            ignored_layers=[model.lm_head, *head_norms],
            num_heads=num_heads,
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=ratio,
            round_to=round_to,
            output_transform=lambda out: out.logits,
            unwrapped_parameters=norms + [(w, 0) for w in head_norms],
        )
        for group in pruner.step(interactive=True):
            group.prune()
        del pruner
    if _attention_modules(model)[0].q_proj.out_features // head_dim == heads:
        _prune_heads_per_kv_group(model, head_dim, per_group)
    _patch_after_pruning(model, head_dim)
    _retie_embeddings(model)
    return model


def check_supported(model: Any) -> tuple[int, int, int]:
    """(heads, kv_heads, head_dim) of a model the helper can prune; anything else is refused now."""
    cfg: Any = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        raise ModelError(f"prune_causal_lm supports {', '.join(SUPPORTED)} models, not "
                         f"{kind or type(model).__name__!r}.")
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    if heads % kv_heads:
        raise ModelError(f"{heads} query heads cannot be shared evenly by {kv_heads} KV heads: not a GQA layout.")
    for m in _attention_modules(model):
        if m.q_proj.out_features != heads * head_dim or m.k_proj.out_features != kv_heads * head_dim:
            raise ModelError("the attention layers do not all have the config's head counts (pruned before, or "
                             "per-layer heads): the helper prunes uniform models only.")
    return heads, kv_heads, head_dim


def heads_to_remove(heads: int, kv_heads: int, ratio: float) -> int:
    """Query heads torch-pruning removes per KV head (all heads for MHA), keeping at least one."""
    total = math.ceil(ratio * heads)
    rep = heads // kv_heads
    if rep == 1:
        return min(total, heads - 1)
    return min(math.ceil(total / kv_heads), rep - 1)


def _attention_modules(model: Any) -> list[Any]:
    return [m for name, m in model.named_modules() if name.endswith("self_attn")]


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        raise SettingsError(f"${TIMEOUT_ENV} must be a number of seconds") from None


@contextmanager
def _tracing(model: Any) -> Iterator[None]:
    """Eval mode, no KV cache, eager attention and the concat-dim fix, all undone afterwards."""
    from torch_pruning.dependency import index_mapping

    cfg = model.config
    was_training, had_cache, attn = model.training, cfg.use_cache, cfg._attn_implementation
    original = index_mapping.update_concat_index_mapping

    def concat_mapping(graph: Any, node: Any) -> Any:
        if getattr(node.grad_fn, "_saved_dim", 0) >= 2**63:  # a negative dim, stored unsigned
            return None  # the last (head) dimension: not a channel concat
        return original(graph, node)

    cfg.use_cache = False
    model.eval()
    _set_attention(model, "eager")
    index_mapping.update_concat_index_mapping = concat_mapping
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = original
        _set_attention(model, attn)
        cfg.use_cache = had_cache
        model.train(was_training)


def _set_attention(model: Any, implementation: str) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(implementation)
    else:  # older transformers: the config decides at call time
        model.config._attn_implementation = implementation


@contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    """A hang in torch-pruning becomes a ModelError after ``seconds`` (SIGALRM in the main thread;
    elsewhere the process is ended with a traceback, never left stuck)."""
    if seconds <= 0:
        yield
        return
    message = (f"torch-pruning did not finish within {seconds:g} s (a known failure mode of its dependency search on "
               f"some attention layouts); raise ${TIMEOUT_ENV} if the model is just large, else report the model's "
               "config")
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM"):
        def expired(signum: int, frame: Any) -> None:
            raise ModelError(message)

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    import faulthandler

    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _prune_heads_per_kv_group(model: Any, head_dim: int, per_group: int) -> None:
    """Remove ``per_group`` query heads from every KV group (for MHA: whole q/k/v heads), the
    weakest by ||q_proj rows||² + ||o_proj columns||², keeping the order of the rest."""
    import torch

    if per_group < 1:
        return
    with torch.no_grad():
        for attn in _attention_modules(model):
            heads = attn.q_proj.out_features // head_dim
            kv_heads = attn.k_proj.out_features // head_dim
            rep = heads // kv_heads
            q = attn.q_proj.weight.float().view(heads, head_dim, -1).pow(2).sum((1, 2))
            o = attn.o_proj.weight.float().view(attn.o_proj.out_features, heads, head_dim).pow(2).sum((0, 2))
            score = (q + o).view(kv_heads, rep)
            if rep == 1:  # MHA: a query head and its KV head go together
                drop = set(torch.topk(score.view(-1), per_group, largest=False).indices.tolist())
                keep = [h for h in range(heads) if h not in drop]
                attn.k_proj = _take_rows(attn.k_proj, _head_rows(keep, head_dim))
                attn.v_proj = _take_rows(attn.v_proj, _head_rows(keep, head_dim))
            else:
                weakest = torch.topk(score, per_group, dim=1, largest=False).indices
                keep = [g * rep + r for g in range(kv_heads) for r in range(rep) if r not in set(weakest[g].tolist())]
            attn.q_proj = _take_rows(attn.q_proj, _head_rows(keep, head_dim))
            attn.o_proj = _take_cols(attn.o_proj, _head_rows(keep, head_dim))


def _head_rows(heads: list[int], head_dim: int) -> Any:
    import torch

    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def _patch_after_pruning(model: Any, head_dim: int) -> None:
    """Make config and attention modules agree with the pruned weights."""
    cfg = model.config
    cfg.hidden_size = model.lm_head.in_features
    cfg.head_dim = head_dim
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            heads = m.q_proj.out_features // head_dim
            kv_heads = m.k_proj.out_features // head_dim
            cfg.num_attention_heads, cfg.num_key_value_heads = heads, kv_heads
            m.num_key_value_groups = heads // kv_heads
            for attr, value in (("num_heads", heads), ("num_key_value_heads", kv_heads),
                                ("hidden_size", m.q_proj.out_features)):
                if hasattr(m, attr):
                    setattr(m, attr, value)
        elif name.endswith("mlp") and hasattr(m, "gate_proj"):
            cfg.intermediate_size = m.gate_proj.out_features


def _retie_embeddings(model: Any) -> None:
    """Pruning the hidden size gives a tied embedding and lm_head two new, equal parameters:
    share one again (else the vocabulary matrix is held twice).  Were they ever to differ, the
    config stops saying tied, so a reload cannot silently replace one by the other."""
    import torch

    if not getattr(model.config, "tie_word_embeddings", False):
        return
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or head.weight is embedding.weight:
        return
    if head.weight.shape == embedding.weight.shape and torch.equal(head.weight, embedding.weight):
        head.weight = embedding.weight
    else:
        model.config.tie_word_embeddings = False


def prune_mlp(model: Any, ratio: float, *, round_to: int = 4, layers: Iterable[int] | None = None,
              copy_model: bool = False) -> Any:
    """Remove the ``ratio`` of MLP channels with the smallest L2 norm over (gate, up, down) in
    each of ``layers`` (default: all), without torch-pruning.  Per-layer widths may then
    differ; ``config.intermediate_size`` keeps the widest, and the model is for evaluation
    (``save_pretrained`` needs uniform widths: prune all layers for that)."""
    import torch

    check_supported(model)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise SettingsError(f"pruning ratio {ratio!r} is outside [0, 1)")
    if copy_model:
        model = copy.deepcopy(model)
    chosen = range(len(model.model.layers)) if layers is None else list(layers)
    inter = model.config.intermediate_size
    keep = max(round_to, round((inter * (1 - ratio)) / round_to) * round_to)
    with torch.no_grad():
        for i in chosen:
            mlp = model.model.layers[i].mlp
            score = (mlp.gate_proj.weight.float().pow(2).sum(1) + mlp.up_proj.weight.float().pow(2).sum(1)
                     + mlp.down_proj.weight.float().pow(2).sum(0))
            idx = torch.topk(score, keep).indices.sort().values
            mlp.gate_proj = _take_rows(mlp.gate_proj, idx)
            mlp.up_proj = _take_rows(mlp.up_proj, idx)
            mlp.down_proj = _take_cols(mlp.down_proj, idx)
    if len(set(chosen)) == len(model.model.layers):
        model.config.intermediate_size = keep
    return model


def _take_rows(linear: Any, idx: Any) -> Any:
    import torch

    out = torch.nn.Linear(linear.in_features, len(idx), bias=linear.bias is not None,
                          device=linear.weight.device, dtype=linear.weight.dtype)
    out.weight.copy_(linear.weight[idx])
    if linear.bias is not None:
        out.bias.copy_(linear.bias[idx])
    return out


def _take_cols(linear: Any, idx: Any) -> Any:
    import torch

    out = torch.nn.Linear(len(idx), linear.out_features, bias=linear.bias is not None,
                          device=linear.weight.device, dtype=linear.weight.dtype)
    out.weight.copy_(linear.weight[:, idx])
    if linear.bias is not None:
        out.bias.copy_(linear.bias)
    return out
