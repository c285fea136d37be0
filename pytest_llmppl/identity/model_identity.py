"""A model's identity: the whole function its forward computes, as one digest.

The principle: everything the forward can read is in it.  That is the module tree (each
module's name and class, with the code of any method that is not an installed library's own:
a subclass, a class method patched at run time, an instance ``forward``), every tensor the
modules hold (parameters, persistent and non-persistent buffers, tensors kept as plain
attributes; quantized packed weights by their integers and scales), every other attribute of
every module by value (numbers, strings, enums, dtypes, containers, pruning
re-parametrisations, PEFT's adapters and scaling), the config, and forward hooks and
pre-hooks (the module's and torch's global ones).  ``value_description`` says how each kind of
value is described.

Left out, because they are not the function: the ``training`` flag (the engine evaluates in
eval mode), state that a forward fills lazily and that is derived from the rest by contract
(attributes named ``*cache*``, such as rotary cos/sin caches and ``max_seq_len_cached``), how
the model was loaded or placed (``NEUTRAL``), and accelerate's dispatch wrappers (they move
tensors between devices).  A ``torch.compile``d model is the module it wraps.  Anything the
walk cannot describe makes the model unpinned: measured every time, never served, and the
report says why.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from .fingerprint import digest
from .size_facts import SizeFacts, size_facts
from .tensors import weights_description
from .value_description import PLAIN as _PLAIN
from .value_description import Describer, Unpinned

IDENTITY_VERSION = 2  # 1: state dict, config and hooks (0.3); 2: the whole function (0.4)
_STRUCTURE = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})
_HOOKS = ("_forward_pre_hooks", "_forward_hooks")
_HOOK_FLAGS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks")
# Attributes that say how a module was loaded, placed, trained or saved, not what it computes.
NEUTRAL = frozenset({
    "training", "_backward_hooks", "_backward_pre_hooks", "_is_full_backward_hook", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
    "_compiled_call_impl",  # module.compile(): the same function, compiled
    "generation_config", "_weight_conversions", "_is_hf_initialized", "name_or_path", "warnings_issued",
    "hf_device_map", "_super_module_initialized", "_kernels_device",
    "_is_torch_compile",  # set by torch.compile(model): the same function, compiled
    "_kernels_mode",  # the hub kernels' training/inference mode: follows the training flag
})


@dataclass(frozen=True)
class ModelIdentity:
    """``digest`` of the model's function; ``unpinned`` says why it could not be pinned down
    (the digest is then unique to this call, so nothing is ever served for it); ``size``:
    what the model keeps, counted in the same pass over its weights."""

    digest: str
    unpinned: str = ""
    size: SizeFacts | None = None


def model_identity(model: Any) -> ModelIdentity:
    """The digest of everything ``model``'s forward reads, and its size facts: one describer for
    the whole walk (the config described once, each class once)."""
    model = unwrap_compiled(model)
    zeros: dict[str, int] = {}
    describe = Describer(config=getattr(model, "config", None))
    try:
        weights = weights_description(model, describe, zeros)
        tree = _tree(model, describe)
    except Unpinned as exc:
        return ModelIdentity(digest("unpinned", uuid.uuid4().hex), f"not served: {exc}", size_facts(model, zeros))
    return ModelIdentity(digest("model", IDENTITY_VERSION, type(model).__name__, describe.config_description,
                                weights, tree), size=size_facts(model, zeros))


def unwrap_compiled(model: Any) -> Any:
    """``torch.compile(model)`` computes ``model``'s function: it has ``model``'s identity."""
    cls = type(model)
    while cls.__name__ == "OptimizedModule" and cls.__module__.startswith("torch._dynamo") and \
            hasattr(model, "_orig_mod"):
        model = model._orig_mod
        cls = type(model)
    return model


def _tree(model: Any, describe: Describer) -> list[Any]:
    """Each module's class and attributes, with its hooks; torch's global hooks last."""
    from torch.nn.modules import module as nn_module

    tree = _modules(model)
    names = {id(m): n for n, m in tree}
    describe.module_ref = names.get
    describe.module = lambda m, depth, seen: ["detached", _module(m, "", describe, depth, seen, whole=True)]
    out = [[name, _module(module, name, describe)] for name, module in tree]
    for attr in _GLOBAL_HOOKS:
        for hook in getattr(nn_module, attr, {}).values():
            try:
                out.append(["", attr, describe(hook)])
            except Unpinned as exc:
                raise _unpinned(f"torch's {attr}", exc) from None
    return out


def _modules(model: Any) -> list[tuple[str, Any]]:
    """``named_modules()`` (each module once, parents first), without its generator per level."""
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()
    stack = [("", model)]
    while stack:
        name, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append((name, module))
        children = [(f"{name}.{k}" if name else k, c) for k, c in module._modules.items() if c is not None]
        stack.extend(reversed(children))
    return out


def _module(module: Any, name: str, describe: Describer, depth: int = 0, seen: frozenset[int] = frozenset(),
            whole: bool = False) -> list[Any]:
    """One module: class, attributes by value and hooks (``whole``: also its tensors and
    children, for a module that is not in the model's tree but is read by it)."""
    own = vars(module)
    names = _described(tuple(own), "_hf_hook" in own and _accelerate_dispatch(module))
    attrs: list[Any] = []
    for attr in names:
        value = own[attr]
        kind = type(value)
        if kind in _PLAIN:  # most attributes: inline, no call, one string
            attrs.append(f"{attr}={kind.__name__}:{value!r}")
            continue
        try:
            attrs.append([attr, describe(value, depth, seen)])
        except Unpinned as exc:
            raise _unpinned(f"module {name or type(module).__name__!r} attribute {attr!r}", exc) from None
    hooks = []
    for attr, flags in zip(_HOOKS, (_HOOK_FLAGS[0], _HOOK_FLAGS[1])):
        registered = own.get(attr)
        for hook_id, hook in registered.items() if registered else ():
            kinds = [f for f in (flags, _HOOK_FLAGS[2]) if hook_id in own.get(f, ())]
            try:
                hooks.append([attr, kinds, describe(hook, depth, seen)])
            except Unpinned as exc:
                raise _unpinned(f"module {name or type(module).__name__!r} {attr[1:-1]}", exc) from None
    out = [describe(type(module), depth, seen), attrs, hooks]
    if whole:
        out.append([[n, describe(t, depth + 1, seen)] for n, t in
                    sorted(list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)))])
        out.append([[n, describe(c, depth + 1, seen)] for n, c in module.named_children()])
    return out


@functools.lru_cache(maxsize=1024)
def _described(names: tuple[str, ...], dispatched: bool) -> tuple[str, ...]:
    """Which of a module's attributes (by name, as ``vars`` lists them) describe its function,
    sorted; modules of one class share the answer."""
    skip = _skipped(dispatched)
    return tuple(sorted(n for n in names if n not in skip and "cache" not in n.lower()))


@functools.lru_cache(maxsize=2)
def _skipped(dispatched: bool) -> frozenset[str]:
    """A module's attributes that are not its function: structure walked elsewhere, hooks
    described on their own, ``NEUTRAL``, ``torch.nn.Module``'s own methods other than the call
    path (an instance override of ``to`` or ``state_dict`` moves or saves the module; accelerate
    wraps ``to`` on a dispatched model) and, on an accelerate-dispatched module, its wrapper."""
    import torch

    calls = {"forward", "__call__", "_call_impl", "_wrapped_call_impl"}
    placement = {n for n, v in vars(torch.nn.Module).items() if callable(v) and n not in calls}
    wrapper = {"_hf_hook", "_old_forward", "forward"} if dispatched else set()
    return frozenset(NEUTRAL | _STRUCTURE | set(_HOOKS) | set(_HOOK_FLAGS) | placement | wrapper)


def _unpinned(where: str, exc: Unpinned) -> Unpinned:
    """The innermost place a value could not be described (a module inside a hook names itself)."""
    return exc if str(exc).startswith("module ") else Unpinned(f"{where} refers to {exc}")


def _accelerate_dispatch(module: Any) -> bool:
    """accelerate's ``add_hook_to_module`` sets an instance ``forward`` that moves tensors
    between devices (``_hf_hook``): the function is the module's own."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return False
    hooks = getattr(hook, "hooks", None) or [hook]
    return all(type(h).__module__.startswith("accelerate.") for h in hooks)
