"""The protocols: how a token stream is cut into windows and how each window's loss counts.

Each module here defines one ``PROTOCOL`` (a ``base.Protocol``) with the same few members;
``get(name)`` finds it.  A sixth protocol is one new module here and its name in
``settings.PROTOCOLS`` (the option's choices, known at start-up without importing this).

Imports only errors (plain integers: no torch, no numpy).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from .base import Protocol, Window

__all__ = ["Protocol", "Window", "get", "names"]


def get(name: str) -> Protocol:
    found = _registry().get(name)
    if found is None:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(names())}")
    return found


def names() -> tuple[str, ...]:
    return tuple(sorted(_registry()))


@functools.cache
def _registry() -> dict[str, Protocol]:
    found: dict[str, Protocol] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        protocol = getattr(module, "PROTOCOL", None)
        if isinstance(protocol, Protocol):
            found[protocol.name] = protocol
    return found
