"""What an installed library's forward looks up in its module when it runs, rebound at run time.

Installed code is described by name (``value_description``).  But the helpers it calls are
looked up in its module's namespace at call time, and they can be rebound: by the user
(``modeling_llama.apply_rotary_pos_emb = my_rope``), by a kernel library under the library's
name (liger-kernel's ``apply_liger_kernel_to_llama`` rebinds ``modeling_llama``'s functions),
or registered under a name the config selects (``AttentionInterface.register("team_attn", fn)``,
or another package's kernel, or the library's own with arguments bound).

So in each installed module that defines a forward (or ``__call__``) of the model's classes, and
in ``torch.nn.functional``, these are part of the function: a global holding the user's code; a
global holding another package's function under another name (an import under the same name is
the library's own, and so are an alias from its own package and one of the standard library's; a
class is left to the tree, which walks its instances); and, in each registry the module holds (a
mapping that is not a plain dict, such as transformers' ``ALL_ATTENTION_FUNCTIONS``), the entries
that are the user's code, and the entry under a name a module's config selects
(``_attn_implementation``, ``_experts_implementation``) when it is not a plain function of the
registry's own library (another package's, a ``partial``); and so are those of the registries
in the modules of the installed functions such a module holds (``masking_utils``' mask
interface, which ``create_causal_mask`` reads).  An unpatched process finds none, so identities
do not depend on which globals a library version has.  Left out, because a rebinding is not told
apart from the library's own there: a plain value (a constant), the library's own function
registered under a name no config selects, a same-package function under another name, and the
other globals of modules that define no forward of the model's classes.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .value_description import Describer, Unpinned, _defined_in_library, is_library_code, unpinned_at


@dataclass(frozen=True)
class _Namespace:
    """An installed module's namespace as last looked at: its rebound globals and registries."""

    keys: tuple[str, ...]
    values: tuple[Any, ...]
    rebound: list[tuple[str, Any]]
    registries: list[tuple[str, Mapping]]
    helpers: frozenset[str]  # other modules whose installed functions it holds (``create_causal_mask``'s)


_SEEN: dict[str, _Namespace] = {}
_REGISTRIES: dict[str, tuple[int, list[tuple[str, Mapping]]]] = {}  # a helper module's: (globals, registries)
# Read through a module attribute by every torch forward (``F.scaled_dot_product_attention``, ``F.silu``).
ALWAYS = frozenset({"torch.nn.functional"})
# The config's choices of a registry entry: which attention (and mask), which experts kernel.
SELECTORS = ("_attn_implementation", "_experts_implementation")
_STDLIB = frozenset(sys.stdlib_module_names) | {"builtins"}  # an alias of functools.lru_cache is no kernel


def rebound(modules: list[Any], describe: Describer) -> list[Any]:
    """The rebound globals and registered entries of the library modules defining the ``modules``'
    forwards, described; empty when nothing was rebound."""
    classes: set[type] = {type(module) for module in modules}
    forward = {m for cls in classes for m in _forward_modules(cls)}
    # a module keeps its config in its __dict__: read there, not through Module.__getattr__'s miss
    configs = {id(c): c for c in (vars(module).get("config") for module in modules) if c is not None}
    selected = {n for c in configs.values() for n in (getattr(c, a, None) for a in SELECTORS) if isinstance(n, str)}
    spaces = {name: _namespace(name, sys.modules[name]) for name in forward | ALWAYS if name in sys.modules}
    helpers = {h for name in forward if name in spaces for h in spaces[name].helpers if h in sys.modules}
    helpers -= spaces.keys()
    out: list[Any] = []
    for name in sorted(spaces.keys() | helpers):
        space = spaces.get(name)
        # a helper's module: only its registries (the mask interface ``create_causal_mask`` reads)
        found = [[g, _described(describe, value, f"{name}.{g}")] for g, value in space.rebound] if space else []
        for g, registry in space.registries if space else _registries_of(name, sys.modules[name]):
            entries = [[repr(k), _described(describe, v, f"{name}.{g}[{k!r}]")]
                       for k, v in _entries(registry, selected)]
            if entries:
                found.append([g, "registry", sorted(entries, key=repr)])
        if found:
            out.append([name, found])
    return out


def _described(describe: Describer, value: Any, where: str) -> Any:
    try:
        return describe(value)
    except Unpinned as exc:
        raise unpinned_at(f"the global {where}", exc) from None


@functools.lru_cache(maxsize=1024)
def _forward_modules(cls: type) -> tuple[str, ...]:
    """The installed modules that define a forward or ``__call__`` along ``cls``'s MRO."""
    return tuple(sorted({c.__module__ for c in cls.__mro__
                         if ("forward" in vars(c) or "__call__" in vars(c)) and _installed_class(c)}))


def _namespace(name: str, module: types.ModuleType) -> _Namespace:
    """What the module's namespace holds that is not its own, remembered while it is unchanged."""
    space = vars(module)
    keys, values = tuple(space), tuple(space.values())
    known = _SEEN.get(name)
    if known is not None and known.keys == keys and all(a is b for a, b in zip(known.values, values)):
        return known
    pairs = [(g, v) for g, v in zip(keys, values) if not (g.startswith("__") and g.endswith("__"))]
    _SEEN[name] = found = _Namespace(
        keys, values, rebound=[(g, v) for g, v in pairs if not _own(name, g, v)],
        registries=[(g, v) for g, v in pairs if _is_registry(v)],
        helpers=frozenset(v.__module__ for _, v in pairs if isinstance(v, types.FunctionType) and v.__module__
                          and v.__module__ != name and v.__module__ in sys.modules
                          and v.__module__.split(".")[0] not in _STDLIB and _installed(v)))
    return found


def _registries_of(name: str, module: types.ModuleType) -> list[tuple[str, Mapping]]:
    """A helper module's registries, remembered while it holds as many globals and those same ones
    (a large module, such as ``modeling_utils``, is not walked at every identity)."""
    space = vars(module)
    known = _REGISTRIES.get(name)
    if known is not None and known[0] == len(space) and all(space.get(g) is r for g, r in known[1]):
        return known[1]
    found = [(g, v) for g, v in space.items() if _is_registry(v)]
    _REGISTRIES[name] = (len(space), found)
    return found


def _is_registry(value: Any) -> bool:
    """A mapping of an installed class that is not a plain dict (transformers' interfaces)."""
    return isinstance(value, Mapping) and not isinstance(value, dict) and _installed_class(type(value))


def _own(module: str, name: str, value: Any) -> bool:
    """Whether ``value``, bound to ``name`` in the installed ``module``, is the library's own."""
    if isinstance(value, (types.ModuleType, type)) or not callable(value):
        return True  # a plain value: not told apart; a class: its instances are in the tree, walked
    if not _installed(value):
        return False  # the user's code under a library's name
    home = (getattr(value, "__module__", None) or module).split(".")[0]
    return getattr(value, "__name__", name) == name or home == module.split(".")[0] or home in _STDLIB


def _installed(value: Any) -> bool:
    """Code of an installed package (or C): a function's code, a class's, an object's class."""
    if isinstance(value, functools.partial):
        return _installed(value.func)
    if isinstance(value, types.MethodType):
        return _installed(value.__func__)
    if isinstance(value, types.FunctionType):  # the standard library's frozen modules have no file
        return is_library_code(value.__code__) or (value.__module__ or "").split(".")[0] in _STDLIB
    if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return True
    return _installed_class(value if isinstance(value, type) else type(value))


def _installed_class(cls: type) -> bool:
    code = [f.__code__ for f in vars(cls).values() if isinstance(f, types.FunctionType)]
    return _defined_in_library(cls, code)


def _entries(registry: Mapping, selected: set[str]) -> list[tuple[Any, Any]]:
    """The user's code among a registry's entries, and the entry under a ``selected`` name that is
    not a plain function of the registry's library; read from the dicts it keeps (its own, then its
    class's, as its lookup does), never through its ``__getitem__`` (a lazy mapping would import)."""
    tables = [v for v in vars(registry).values() if isinstance(v, dict)] if hasattr(registry, "__dict__") else []
    tables += [v for c in type(registry).__mro__ for v in vars(c).values() if isinstance(v, dict)]
    home = type(registry).__module__.split(".")[0]
    seen, out = set(), []
    for table in tables:
        for key, value in dict.items(table):
            if not callable(value) or (id(table), key) in seen:
                continue
            if not _installed(value) or (key in selected and not _library_function(value, home)):
                seen.add((id(table), key))
                out.append((key, value))
    return out


def _library_function(value: Any, home: str) -> bool:
    return isinstance(value, types.FunctionType) and (value.__module__ or "").split(".")[0] == home
