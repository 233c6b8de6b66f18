"""Encoders by name: built-ins registered in code, plugins through entry points.

A package registers a plugin encoder in its packaging metadata:

    [project.entry-points."textme.encoders"]
    languagebind = "my_pkg.encoders:make_languagebind"

The factory is called with the encoder's options as keyword arguments and returns an
`Encoder`. Built-in names win over plugins of the same name (a plugin cannot silently
replace the paper's CLIP).

`check_options(name, options)` refuses an option the factory does not take, without
building anything: the factory's signature says what it takes (one taking `**kwargs`
takes anything). A factory whose options hold other encoders' specs (`composite`) says
where they are with a `nested_encoders(options)` attribute; those are checked too.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any, TypeVar

from .base import Encoder
from .errors import EncoderError, UnknownEncoderError

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


#: One entry-point scan per sys.path: a scan reads every installed distribution's
#: metadata (~12 ms here) and a run resolves encoders in every stage, so a warm demo run
#: scanned 12 times. What is installed is fixed for a process unless sys.path changes.
_SCANS: dict[tuple[str, ...], dict[str, metadata.EntryPoint]] = {}


def _entry_points() -> dict[str, metadata.EntryPoint]:
    key = tuple(sys.path)
    if key not in _SCANS:
        _SCANS[key] = _scan_entry_points()
    return _SCANS[key]


def _scan_entry_points() -> dict[str, metadata.EntryPoint]:
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


class OptionError(EncoderError, TypeError):
    """An option an encoder does not take (a `TypeError`, as calling the factory would be).

    `path` is its dotted place inside the encoder's options (``dimm``, or
    ``text.options.pretraned`` inside a composite), `reason` what is wrong and what is
    accepted: a caller names the config field with them (tasks/validate.py).
    """

    def __init__(self, path: str, reason: str, message: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(message or f"option {path!r}: {reason}")


def accepted_options(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword options a factory takes, in signature order; None: it takes any."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_options(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Refuse an unknown option by name, listing the accepted ones."""
    accepted = accepted_options(factory)
    if accepted is None:
        return
    unknown = [key for key in options if key not in accepted]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), accepted, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise OptionError(str(unknown[0]),
                          f"unknown option of encoder {name!r} (accepted: {', '.join(accepted)}){hint}",
                          f"encoder {name!r}: unknown option(s) {', '.join(map(str, sorted(unknown)))}; "
                          f"accepted: {', '.join(accepted)}")


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse what `get_encoder(name, **options)` would refuse by name, building nothing.

    Raises UnknownEncoderError for an unknown name, OptionError (its `path` inside
    `options`) for an option the factory, or a nested encoder's factory, does not take.
    """
    factory, _ = _factory(name)
    _check_options(name, factory, options)
    nested: Callable[[Mapping[str, Any]], Iterable[tuple[str, str, Mapping[str, Any]]]] | None = getattr(
        factory, "nested_encoders", None)
    for path, sub_name, sub_options in nested(options) if nested else ():
        try:
            check_options(sub_name, sub_options)
        except UnknownEncoderError:
            raise OptionError(f"{path}.encoder", f"unknown encoder {sub_name!r} (known: "
                                                 f"{', '.join(list_encoders())})") from None
        except OptionError as err:
            raise OptionError(f"{path}.options.{err.path}", err.reason) from None


def get_encoder(name: str, *, normalize: bool = True, **options: Any) -> Encoder:
    """Create the encoder registered as `name` with `options`; weights load lazily.

    `normalize` (every encoder takes it; not passed to the factory): False keeps the
    model's own output vectors instead of unit rows (`Encoder.set_normalize`).
    """
    factory, origin = _factory(name)
    _check_options(name, factory, options)
    enc = factory(**options)
    if not isinstance(enc, Encoder):
        raise TypeError(f"encoder {name!r} ({origin}) returned {type(enc).__name__}, "
                        f"not a textme.encoders.Encoder")
    enc.name = name
    return enc.set_normalize(normalize)
