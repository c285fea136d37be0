"""A model's identity: the whole function its forward computes, as one digest.

The principle: everything the forward can read is in it.  That is the module tree (each
module's name and class, with the code of any method that is not an installed library's own:
a subclass, a class method patched at run time, an instance ``forward``), every tensor the
modules hold (parameters, persistent and non-persistent buffers, tensors kept as plain
attributes; quantized packed weights by their integers and scales), every other attribute of
every module by value (numbers, strings, enums, dtypes, containers, pruning
re-parametrisations, PEFT's adapters and scaling), the config, forward hooks and
pre-hooks (the module's and torch's global ones), the helpers an installed forward looks up in
its module that were rebound at run time (``library_globals``), and the torch function and
dispatch modes active around the call (the forward runs within them).  ``value_description``
says how each kind of value is described.

Left out, because they are not the function: the ``training`` flag (the engine evaluates in
eval mode), state that a forward fills lazily and that is derived from the rest by contract
(attributes named ``*cache*``, such as rotary cos/sin caches and ``max_seq_len_cached``), how
the model was loaded or placed (``NEUTRAL``), and accelerate's dispatch wrappers (they move
tensors between devices).  A ``torch.compile``d model is the module it wraps.  Anything the
walk cannot describe makes the model unpinned: measured every time, never served, and the
report says why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .fingerprint import digest
from .size_facts import SizeFacts
from .tensors import weights
from .value_description import NEUTRAL, Describer, Unpinned, unpinned_at

__all__ = ["IDENTITY_VERSION", "NEUTRAL", "ModelIdentity", "model_identity", "unwrap_compiled"]

IDENTITY_VERSION = 2  # 1: state dict, config and hooks (0.3); 2: the whole function (0.4)
_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks")


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
    the whole walk (the config described once, each class once), one pass over the weights."""
    model = unwrap_compiled(model)
    describe = Describer(config=getattr(model, "config", None))
    held = weights(model, describe)
    try:
        if held.unpinned:
            raise Unpinned(held.unpinned)
        tree = _tree(model, describe)
    except Unpinned as exc:
        return ModelIdentity(digest("unpinned", uuid.uuid4().hex), f"not served: {exc}", held.size)
    return ModelIdentity(digest("model", IDENTITY_VERSION, type(model).__name__, describe.config_description,
                                held.items, tree), size=held.size)


def unwrap_compiled(model: Any) -> Any:
    """``torch.compile(model)`` computes ``model``'s function: it has ``model``'s identity."""
    cls = type(model)
    while cls.__name__ == "OptimizedModule" and cls.__module__.startswith("torch._dynamo") and \
            hasattr(model, "_orig_mod"):
        model = model._orig_mod
        cls = type(model)
    return model


def _tree(model: Any, describe: Describer) -> list[Any]:
    """Each module's class and attributes, with its hooks; torch's global hooks last, then what
    the installed forwards look up in their modules and was rebound, and the torch modes active
    around the call (each only when there is one)."""
    from torch.nn.modules import module as nn_module

    from .library_globals import rebound

    tree = _modules(model)
    names = {id(m): n for n, m in tree}
    describe.module_ref = names.get
    describe.detached = True
    out = [[name, describe.module_of(module, name)] for name, module in tree]
    for attr in _GLOBAL_HOOKS:
        for hook in getattr(nn_module, attr, {}).values():
            try:
                out.append(["", attr, describe(hook)])
            except Unpinned as exc:
                raise unpinned_at(f"torch's {attr}", exc) from None
    replaced = rebound([module for _, module in tree], describe)
    if replaced:
        out.append(["", "rebound", replaced])
    modes = _active_modes()
    if modes:
        try:
            out.append(["", "modes", [describe(mode) for mode in modes]])
        except Unpinned as exc:
            raise unpinned_at("an active torch mode", exc) from None
    return out


def _active_modes() -> list[Any]:
    """The torch function and dispatch modes active now, innermost last (a ``TorchFunctionMode``
    that rewrites ops, a fake-quantization ``TorchDispatchMode``, ``with torch.device(...)``): the
    forward, run within the same call, goes through them for every op."""
    try:
        from torch.overrides import _get_current_function_mode_stack
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack
    except ImportError:  # a torch without them: no modes to see
        return []
    return [*_get_current_function_mode_stack(), *_get_current_dispatch_mode_stack()]


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
