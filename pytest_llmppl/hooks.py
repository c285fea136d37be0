"""What changes a model's function beyond its weights: forward hooks and forward overrides.

Head pruning by masking (a forward pre-hook that zeroes heads), a patched ``forward`` on
one layer, a global hook: the state dict is unchanged, the numbers are not.  Each such
hook or override is described by its code and what it closes over (numbers and strings
by value, tensors by content, functions recursively), so the same hook gives the same
identity in another process and any change gives another.  Hooks known not to change
the function are recognised: accelerate's dispatch hooks (a ``device_map`` model keeps
its cache) and ``torch.nn.utils.prune``'s re-parametrisation (its mask and original
weight are in the state dict already).  What cannot be pinned down (an object of unknown
kind in a closure) makes the model unpinned: it is measured, never served or stored.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

from .fingerprint import digest

MAX_DEPTH = 6
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks")
_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks")
_PLAIN = (type(None), bool, int, float, complex, str, bytes)


class Unpinned(Exception):
    """A hook whose behaviour cannot be described by value."""


@dataclass(frozen=True)
class FunctionIdentity:
    """The hooks and overrides of a model: ``digest`` ("" when there are none, so a plain
    model's identity is its weights alone) and, when one cannot be pinned down, why."""

    digest: str = ""
    unpinned: str = ""


def function_identity(model: Any) -> FunctionIdentity:
    """Describe every forward hook, pre-hook and instance-level ``forward`` of ``model``'s
    modules, and torch's global forward hooks."""
    from torch.nn.modules import module as nn_module

    found: list[Any] = []
    try:
        for name, module in model.named_modules():
            for attr in _HOOK_DICTS:
                for hook in getattr(module, attr, {}).values():
                    if not _neutral(hook):
                        found.append((name, attr, _describe(hook, 0, set())))
            if "forward" in vars(module) and not _accelerate_dispatch(module):
                found.append((name, "forward", _describe(vars(module)["forward"], 0, set())))
        for attr in _GLOBAL_HOOKS:
            for hook in getattr(nn_module, attr, {}).values():
                found.append(("", attr, _describe(hook, 0, set())))
    except Unpinned as exc:
        return FunctionIdentity(unpinned=str(exc))
    return FunctionIdentity(digest(found) if found else "")


def _neutral(hook: Any) -> bool:
    """Hooks that do not change what the model computes beyond its state dict."""
    from torch.nn.utils import prune

    return isinstance(hook, prune.BasePruningMethod)


def _accelerate_dispatch(module: Any) -> bool:
    """accelerate's ``add_hook_to_module`` sets an instance ``forward`` that moves tensors
    between devices (``_hf_hook``): the function is the module's own."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return False
    hooks = getattr(hook, "hooks", None) or [hook]
    return all(type(h).__module__.startswith("accelerate.") for h in hooks)


def _describe(obj: Any, depth: int, seen: set[int]) -> Any:
    """A JSON-able value that changes when ``obj``'s behaviour may change."""
    import torch

    if depth > MAX_DEPTH:
        raise Unpinned(f"a hook nests deeper than {MAX_DEPTH} levels")
    if isinstance(obj, _PLAIN):
        return [type(obj).__name__, repr(obj)]
    if isinstance(obj, torch.Tensor):
        from .fingerprint import tensor_hash

        return ["tensor", list(obj.shape), str(obj.dtype), tensor_hash(obj)]
    if isinstance(obj, (types.ModuleType, type)):
        return [type(obj).__name__, getattr(obj, "__module__", ""), getattr(obj, "__qualname__", obj.__name__)]
    if id(obj) in seen:
        return ["seen"]
    seen = seen | {id(obj)}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_describe(x, depth + 1, seen) for x in obj]
        return [type(obj).__name__, sorted(items, key=repr) if isinstance(obj, (set, frozenset)) else items]
    if isinstance(obj, dict):
        return ["dict", sorted(([repr(k), _describe(v, depth + 1, seen)] for k, v in obj.items()), key=repr)]
    if isinstance(obj, types.FunctionType):
        return _function(obj, depth, seen)
    if isinstance(obj, types.MethodType):
        return ["method", _describe(obj.__func__, depth + 1, seen), _describe(obj.__self__, depth + 1, seen)]
    if isinstance(obj, types.BuiltinFunctionType):
        return ["builtin", getattr(obj, "__module__", ""), obj.__qualname__]
    import functools

    if isinstance(obj, functools.partial):
        return ["partial", _describe(obj.func, depth + 1, seen), _describe(obj.args, depth + 1, seen),
                _describe(obj.keywords, depth + 1, seen)]
    if isinstance(obj, torch.nn.Module):
        state = obj.state_dict()
        return ["module", type(obj).__qualname__, _describe(obj.forward, depth + 1, seen),
                [[k, _describe(state[k], depth + 1, seen)] for k in sorted(state)]]
    if hasattr(obj, "__dict__") and callable(obj):
        cls = type(obj)
        return ["callable", cls.__module__, cls.__qualname__, _describe(cls.__call__, depth + 1, seen),
                _describe(vars(obj), depth + 1, seen)]
    raise Unpinned(f"a hook refers to a {type(obj).__name__}, which cannot be compared by value")


def _function(fn: types.FunctionType, depth: int, seen: set[int]) -> Any:
    """A function by its code, defaults, closure and the globals its code reads."""
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(_describe(cell.cell_contents, depth + 1, seen))
        except ValueError:  # an empty cell
            cells.append(["empty"])
    names = _global_names(fn.__code__)
    read = {n: fn.__globals__[n] for n in sorted(names) if n in fn.__globals__}
    return ["function", fn.__module__, fn.__qualname__, _code(fn.__code__),
            _describe(fn.__defaults__, depth + 1, seen), _describe(fn.__kwdefaults__, depth + 1, seen), cells,
            [[n, _describe(v, depth + 1, seen)] for n, v in read.items()]]


def _code(code: types.CodeType) -> Any:
    consts = [_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return [code.co_code.hex(), consts, list(code.co_names)]


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return names
