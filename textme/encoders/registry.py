"""Encoders by name: built-ins registered in code, plugins through entry points.

A package registers a plugin encoder in its packaging metadata:

    [project.entry-points."textme.encoders"]
    languagebind = "my_pkg.encoders:make_languagebind"

The factory is called with the encoder's options as keyword arguments and returns an
`Encoder`. Built-in names win over plugins of the same name (a plugin cannot silently
replace the paper's CLIP).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

from .base import Encoder
from .errors import UnknownEncoderError

ENTRY_POINT_GROUP = "textme.encoders"

log = logging.getLogger(__name__)
_BUILTINS: dict[str, Callable[..., Encoder]] = {}
F = TypeVar("F", bound=Callable[..., Encoder])


def register_encoder(name: str) -> Callable[[F], F]:
    """Decorator: register a built-in encoder factory (a class or a function) under `name`."""

    def deco(factory: F) -> F:
        if name in _BUILTINS and _BUILTINS[name] is not factory:
            raise ValueError(f"encoder name {name!r} is already registered")
        _BUILTINS[name] = factory
        return factory

    return deco


def _entry_points() -> dict[str, metadata.EntryPoint]:
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTINS:
            log.warning("plugin encoder %r (%s) ignored: the name is a built-in", ep.name, ep.value)
        else:
            found.setdefault(ep.name, ep)
    return found


def list_encoders() -> list[str]:
    """Built-in and plugin encoder names, sorted."""
    return sorted(set(_BUILTINS) | set(_entry_points()))


def _factory(name: str) -> tuple[Callable[..., Encoder], str]:
    if name in _BUILTINS:
        return _BUILTINS[name], "built-in"
    ep = _entry_points().get(name)
    if ep is None:
        raise UnknownEncoderError(f"unknown encoder {name!r}; known encoders: "
                                  f"{', '.join(list_encoders())} (plugins register through the "
                                  f"{ENTRY_POINT_GROUP!r} entry point group)")
    try:
        return ep.load(), f"plugin {ep.value}"
    except Exception as err:
        raise ImportError(f"encoder {name!r}: plugin {ep.value} could not be imported: {err}") from err


def _check_options(name: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse an unknown option by name, listing the accepted ones."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"encoder {name!r}: unknown option(s) {', '.join(unknown)}; "
                        f"accepted: {', '.join(accepted)}")


def get_encoder(name: str, **options: Any) -> Encoder:
    """Create the encoder registered as `name` with `options`; weights load lazily."""
    factory, origin = _factory(name)
    _check_options(name, factory, options)
    enc = factory(**options)
    if not isinstance(enc, Encoder):
        raise TypeError(f"encoder {name!r} ({origin}) returned {type(enc).__name__}, "
                        f"not a textme.encoders.Encoder")
    enc.name = name
    return enc
