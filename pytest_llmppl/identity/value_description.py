"""Any value a model's forward may read, described by value: the same in another process, other
after any change that may change what it computes.

Numbers, strings, enums, dtypes and containers of them by value; tensors by content (quantized
ones by their integers and scales); code by what it is: a function of an installed library
(site-packages, the standard library) by its name, its closure and defaults (the library's
version is in the identity already, or named here); any other function by its source (its
bytecode when it has none), defaults, closure and the globals it loads, recursively; a class
the same way (an installed one by name, plus any of its methods patched at run time); objects
of plain Python classes by class and state; a module by its class, its attributes (but those
in ``NEUTRAL`` and the structure walked elsewhere) and its hooks, where the model's tree meets it
(``Describer.module_of``), and whole where one of its values refers to a module outside the
tree.  What cannot be described (a lock, a C object) raises ``Unpinned``: the model is then
measured every time, never served.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import sys
import types
from collections.abc import Callable
from typing import Any

from .fingerprint import Hashed

MAX_DEPTH = 10
PLAIN = (type(None), bool, int, float, complex, str, bytes)
# Config keys that say how a model was loaded or run, not what it computes.
CONFIG_NOISE = frozenset({"_name_or_path", "transformers_version", "use_cache", "dtype", "torch_dtype",
                          "_attn_implementation_autoset", "_commit_hash"})
_STRUCTURE = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})
_HOOKS = ("_forward_pre_hooks", "_forward_hooks")
_HOOK_FLAGS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
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


class Unpinned(Exception):
    """A value whose behaviour cannot be described by value."""


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = {sysconfig.get_paths().get(k, "") for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # some virtualenvs' site module
        pass
    return tuple(sorted(p for p in paths if p))


def is_library_code(code: types.CodeType) -> bool:
    """Code of an installed package or the standard library (not the user's own, not a script)."""
    return code.co_filename.startswith(_library_roots())


def library_version(module: str) -> str:
    top = sys.modules.get(module.split(".")[0])
    return str(getattr(top, "__version__", ""))


@functools.lru_cache(maxsize=8192)
def _loaded_globals(code: types.CodeType) -> tuple[str, ...]:
    """The global names a code object (and the code nested in it) loads."""
    import dis

    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_loaded_globals(const))
    return tuple(sorted(str(n) for n in names))


@functools.lru_cache(maxsize=8192)
def _source(code: types.CodeType) -> str:
    """A function's source (stable across Python versions), its bytecode when it has none."""
    import inspect

    try:
        return inspect.getsource(code)
    except (OSError, TypeError):
        consts = [_source(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
        return repr([code.co_code.hex(), consts, list(code.co_names)])


# id(class) -> (class, ids of its members, description): installed classes nobody patched.
_BASES: dict[int, tuple[type, tuple[int, ...], Any]] = {}


class Describer:
    """Describes values for one identity walk.  ``module_ref`` names a module of the model being
    walked (described where the walk meets it, so a reference to it is its name); ``config``
    is the model's config, described once here (``config_description``) and named where it is
    met again; ``detached``: a module the model's tree does not hold is described whole (else it
    is unpinned)."""

    def __init__(self, module_ref: Callable[[Any], str | None] = lambda m: None, config: Any = None,
                 detached: bool = False) -> None:
        self.module_ref = module_ref
        self.config = config
        self.config_description = describe_config(config) if config is not None and hasattr(config, "to_dict") \
            else {}
        self.detached = detached
        self._classes: dict[int, Any] = {}

    def __call__(self, obj: Any, depth: int = 0, seen: frozenset[int] = frozenset()) -> Any:
        import torch

        kind = type(obj)
        if kind in PLAIN:  # the common case first: most attributes are numbers and strings
            return [kind.__name__, repr(obj)]
        if obj is self.config:
            return ["config", "model"]
        if depth > MAX_DEPTH:
            raise Unpinned(f"a value nests deeper than {MAX_DEPTH} levels")
        if isinstance(obj, PLAIN):
            return [kind.__name__, repr(obj)]
        if isinstance(obj, enum.Enum):
            return ["enum", type(obj).__module__, type(obj).__qualname__, repr(obj.value)]
        if isinstance(obj, (torch.dtype, torch.device, torch.layout, torch.memory_format, torch.qscheme)):
            return ["torch", str(obj)]
        if isinstance(obj, torch.Tensor):
            return self.tensor(obj)
        if isinstance(obj, types.ModuleType):
            return ["module", obj.__name__]
        if isinstance(obj, type):
            return self.cls(obj, depth, seen)
        if id(obj) in seen:
            return ["seen"]
        seen = seen | {id(obj)}
        d = depth + 1
        if isinstance(obj, (list, tuple, set, frozenset)):
            items = [self(x, d, seen) for x in obj]
            return [type(obj).__name__, sorted(items, key=repr) if isinstance(obj, (set, frozenset)) else items]
        if isinstance(obj, dict):
            # In the order of each pair's repr, which its key's repr decides (no repr is another's
            # prefix): the values are not repr'd, so a class among them is not hashed here.
            return ["dict", sorted(([repr(k), self(v, d, seen)] for k, v in obj.items()), key=_first_repr)]
        if isinstance(obj, types.FunctionType):
            return self.function(obj, depth, seen)
        if isinstance(obj, types.MethodType):
            return ["method", self(obj.__func__, d, seen), self(obj.__self__, d, seen)]
        if isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType,
                            types.MethodDescriptorType)):
            return ["builtin", getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", repr(obj))]
        if isinstance(obj, functools.partial):
            return ["partial", self(obj.func, d, seen), self(obj.args, d, seen), self(obj.keywords, d, seen)]
        if isinstance(obj, torch.nn.Module):
            name = self.module_ref(obj)
            if name is not None:
                return ["submodule", name]
            if not self.detached:
                raise Unpinned(f"a {type(obj).__name__} module outside the model")
            return ["detached", self.module_of(obj, "", d, seen, whole=True)]
        if isinstance(obj, torch.ScriptObject) and hasattr(obj, "__getstate__"):
            return ["script", self(obj.__getstate__(), d, seen)]  # packed quantized weights: their tensors
        if _is_config(kind):  # type: ignore[arg-type]
            return ["config", describe_config(obj)]
        if dataclasses.is_dataclass(obj):
            return ["dataclass", self.cls(type(obj), d, seen),
                    [[f.name, self(getattr(obj, f.name), d, seen)] for f in dataclasses.fields(obj)]]
        if _plain_object(obj):
            slots = [[n, self(getattr(obj, n, None), d, seen)] for n in _slots(type(obj))]
            return ["object", self.cls(type(obj), d, seen), self(vars(obj), d, seen), slots]
        raise Unpinned(f"a {type(obj).__module__}.{type(obj).__qualname__}, which cannot be compared by value")

    def module_of(self, module: Any, name: str, depth: int = 0, seen: frozenset[int] = frozenset(),
                  whole: bool = False) -> list[Any]:
        """One module: class, attributes by value and hooks (``whole``: also its tensors and
        children, for a module that is not in the model's tree but is read by it)."""
        own = vars(module)
        names = _described(tuple(own), "_hf_hook" in own and _accelerate_dispatch(module))
        attrs: list[Any] = []
        for attr in names:
            value = own[attr]
            kind = type(value)
            if kind in PLAIN:  # most attributes: inline, no call, one string
                attrs.append(f"{attr}={kind.__name__}:{value!r}")
                continue
            try:
                attrs.append([attr, self(value, depth, seen)])
            except Unpinned as exc:
                raise unpinned_at(f"module {name or type(module).__name__!r} attribute {attr!r}", exc) from None
        hooks = []
        for attr, flags in zip(_HOOKS, (_HOOK_FLAGS[0], _HOOK_FLAGS[1])):
            registered = own.get(attr)
            for hook_id, hook in registered.items() if registered else ():
                kinds = [f for f in (flags, _HOOK_FLAGS[2]) if hook_id in own.get(f, ())]
                try:
                    hooks.append([attr, kinds, self(hook, depth, seen)])
                except Unpinned as exc:
                    raise unpinned_at(f"module {name or type(module).__name__!r} {attr[1:-1]}", exc) from None
        out = [self(type(module), depth, seen), attrs, hooks]
        if whole:
            tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            out.append([[n, self(t, depth + 1, seen)] for n, t in sorted(tensors)])
            out.append([[n, self(c, depth + 1, seen)] for n, c in module.named_children()])
        return out

    def tensor(self, t: Any) -> Any:
        from .tensors import tensor_hash

        if t.is_meta:
            raise Unpinned("a tensor on the meta device (no values to compare)")
        return ["tensor", list(t.shape), str(t.dtype), tensor_hash(t)]

    def function(self, fn: types.FunctionType, depth: int, seen: frozenset[int]) -> Any:
        """A library function by name, any other by its code and the globals it loads; both with
        their defaults and closure (a library factory's hook closes over the user's values)."""
        d = depth + 1
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(self(cell.cell_contents, d, seen))
            except ValueError:  # an empty cell
                cells.append(["empty"])
        head = [fn.__module__, fn.__qualname__, self(fn.__defaults__, d, seen), self(fn.__kwdefaults__, d, seen),
                cells]
        if is_library_code(fn.__code__):
            return ["libfunction", library_version(fn.__module__ or ""), *head]
        read = [[n, self(fn.__globals__[n], d, seen)] for n in _loaded_globals(fn.__code__) if n in fn.__globals__]
        return ["function", _source(fn.__code__), *head, read]

    def cls(self, cls: type, depth: int, seen: frozenset[int]) -> Any:
        """A class by name where an installed library defines it and nobody patched it; otherwise
        its own functions and plain attributes, and those of its bases, by value."""
        key = id(cls)
        if key not in self._classes:
            self._classes[key] = ["cycle", cls.__qualname__]  # a class attribute naming the class
            self._classes[key] = ["class", cls.__qualname__, Hashed(self._class(cls, depth, seen))]
        return self._classes[key]

    def _class(self, cls: type, depth: int, seen: frozenset[int]) -> Any:
        return [self._base(base, depth, seen) for base in cls.__mro__ if base is not object]

    def _base(self, base: type, depth: int, seen: frozenset[int]) -> Any:
        """One class of an MRO: remembered across walks while its members are the same objects
        (a patch replaces one), so an installed class costs a look, not a walk."""
        own = vars(base)
        members = tuple(map(id, own.values()))
        known = _BASES.get(id(base))
        if known is not None and known[0] is base and known[1] == members:
            return known[2]
        described = self._members(base, own, depth, seen)
        if described[2]:  # an installed class with nothing patched: nothing of the user's to re-read
            _BASES[id(base)] = (base, members, described)
        return described

    def _members(self, base: type, own: Any, depth: int, seen: frozenset[int]) -> Any:
        """An installed class's members patched at run time (its own are named by the class), or
        every member of the user's class."""
        code = [f.__code__ for f in own.values() if isinstance(f, types.FunctionType)]
        library = _defined_in_library(base, code)
        items = []
        for name in sorted(own):
            value = own[name]
            if name == "_abc_impl" or (name.startswith("__") and name.endswith("__") and not callable(value)):
                continue  # __module__, __doc__, __dict__, __slots__, abc's registry: bookkeeping
            if library and _library_member(value):
                continue
            items.append([name, self._member(value, depth + 1, seen)])
        return [base.__module__, base.__qualname__, library and not items, items]

    def _member(self, value: Any, depth: int, seen: frozenset[int]) -> Any:
        if isinstance(value, (staticmethod, classmethod)):
            return [type(value).__name__, self(value.__func__, depth, seen)]
        if isinstance(value, property):
            return ["property", self(value.fget, depth, seen), self(value.fset, depth, seen)]
        if isinstance(value, (types.WrapperDescriptorType, types.MemberDescriptorType, types.GetSetDescriptorType)):
            return ["descriptor", getattr(value, "__qualname__", "")]
        return self(value, depth, seen)


def _defined_in_library(cls: type, code: list[Any]) -> bool:
    """An installed package's class: its module's file (or its methods') lives in site-packages."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None) or ""
    if path:
        return path.startswith(_library_roots())
    if cls.__module__ in sys.builtin_module_names:
        return True
    return bool(code) and all(c is not None and is_library_code(c) for c in code)


def _library_member(value: Any) -> bool:
    """A member an installed class defines itself: its code, or a constant (the version has it)."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return all(f is None or not isinstance(f, types.FunctionType) or is_library_code(f.__code__)
                   for f in (value.fget, value.fset))
    return not isinstance(value, types.FunctionType) or is_library_code(value.__code__)


@functools.lru_cache(maxsize=256)
def _is_config(cls: type) -> bool:
    """A Hugging Face configuration class (read through ``to_dict``)."""
    return hasattr(cls, "to_dict") and cls.__name__.endswith("Config") and hasattr(cls, "model_type")


def _first_repr(pair: list[Any]) -> str:
    return repr(pair[0])


def describe_config(config: Any) -> dict[str, Any]:
    """A Hugging Face config as it shapes the computation (how it was loaded left out)."""
    import json

    data = {k: v for k, v in config.to_dict().items() if k not in CONFIG_NOISE}
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _plain_object(obj: Any) -> bool:
    """An instance of a Python class whose state is its ``__dict__`` (and any slots)."""
    cls = type(obj)
    return hasattr(obj, "__dict__") and cls.__module__ != "builtins"


def _slots(cls: type) -> list[str]:
    names: set[str] = set()
    for c in cls.__mro__:
        declared = c.__dict__.get("__slots__") or ()
        names.update([declared] if isinstance(declared, str) else declared)
    return sorted(names - {"__dict__", "__weakref__"})


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


def unpinned_at(where: str, exc: Unpinned) -> Unpinned:
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
