"""The "composite" encoder: each tower taken from another encoder.

For encoders whose two sides come through different doors, e.g. Uni3D: its text side is
a plain open_clip model (`uni3d-text`, native) while its point tower needs the authors'
code (a plugin, or `precomputed` vectors):

    encoder: composite
    options:
      text:  {encoder: uni3d-text}
      modal: {encoder: precomputed, options: {modal: uni3d_points.parquet}, tower: modal}
      modality: point

Each part is {encoder, options (optional), tower (optional, default: the same name)};
`device` and `batch_size`, when given, are passed to parts that do not set their own.
A tower's identity is its part's identity, so vectors are shared with direct use of the
part. Both parts must give the same dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Encoder
from .registry import OptionError, get_encoder, register_encoder

PART_KEYS = {"encoder", "options", "tower"}


@register_encoder("composite")
class CompositeEncoder(Encoder):
    adapter = "composite"
    embed_code_version = "1"

    def __init__(self, *, text: Mapping[str, Any] | None = None, modal: Mapping[str, Any] | None = None,
                 query: Mapping[str, Any] | None = None, modality: str | None = None,
                 device: str | None = None, batch_size: int | None = None) -> None:
        super().__init__(batch_size=batch_size)
        specs = {t: s for t, s in (("text", text), ("modal", modal), ("query", query)) if s is not None}
        if not specs:
            raise ValueError("composite needs at least one of `text`, `modal`, `query`")
        self.parts: dict[str, tuple[Encoder, str]] = {}
        for tower, spec in specs.items():
            if not isinstance(spec, Mapping) or "encoder" not in spec or set(spec) - PART_KEYS:
                raise ValueError(f"composite part {tower!r}: expected a mapping with keys "
                                 f"{sorted(PART_KEYS)} ('encoder' required), got {spec!r}")
            options = dict(spec.get("options") or {})
            for key, value in (("device", device), ("batch_size", batch_size)):
                if value is not None:
                    options.setdefault(key, value)
            enc = get_encoder(spec["encoder"], **options)
            source_tower = spec.get("tower", tower)
            enc._check_tower(source_tower)
            self.parts[tower] = (enc, source_tower)
        self.towers = tuple(self.parts)
        if modality is None and "modal" in self.parts:
            modality = self.parts["modal"][0].modality
        self.modality = modality

    @staticmethod
    def nested_encoders(options: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
        """(place, encoder name, options) of each part: the registry checks their options."""
        parts = []
        for tower in ("text", "modal", "query"):
            spec = options.get(tower)
            if spec is None:
                continue
            if not isinstance(spec, Mapping):
                raise OptionError(tower, f"expected a mapping with keys {', '.join(sorted(PART_KEYS))}, "
                                         f"got {type(spec).__name__}")
            extra = [key for key in spec if key not in PART_KEYS]
            if extra:
                raise OptionError(f"{tower}.{extra[0]}", f"unknown key of a composite part (accepted: "
                                                         f"{', '.join(sorted(PART_KEYS))})")
            if "encoder" not in spec:
                raise OptionError(f"{tower}.encoder", "required field is missing (the part's encoder name)")
            if not isinstance(spec.get("options") or {}, Mapping):
                raise OptionError(f"{tower}.options", "expected a mapping")
            parts.append((tower, spec["encoder"], spec.get("options") or {}))
        return parts

    def set_normalize(self, normalize: bool) -> "CompositeEncoder":
        """The parts' outputs are the composite's: the setting goes to every part."""
        super().set_normalize(normalize)
        for enc, _ in self.parts.values():
            enc.set_normalize(normalize)
        return self

    def identity(self, tower: str) -> dict[str, Any]:
        self._check_tower(tower)
        enc, source_tower = self.parts[tower]
        return enc.identity(source_tower)

    def _identity(self, tower: str) -> dict[str, Any]:  # pragma: no cover - identity() overrides
        return self.identity(tower)

    @property
    def dim(self) -> int:
        dims = {t: enc.dim for t, (enc, _) in self.parts.items()}
        if len(set(dims.values())) > 1:
            detail = ", ".join(f"{t} ({self.parts[t][0].name}) {d}" for t, d in dims.items())
            raise ValueError(f"composite encoder {self.name!r}: parts disagree on dimension: {detail}")
        return next(iter(dims.values()))

    def unload(self) -> None:
        for enc, _ in self.parts.values():
            enc.unload()

    def encode(self, tower: str, inputs: Any, *, batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        """The part's own encode (its checks, its default batch size), after the dim check."""
        self._check_tower(tower)
        self.dim
        enc, source_tower = self.parts[tower]
        return enc.encode(source_tower, inputs, batch_size=batch_size, progress=progress)

    def _encode(self, tower: str, items: list[str], *, batch_size: int,
                progress: bool) -> np.ndarray:  # pragma: no cover - encode() overrides
        return self.encode(tower, items, batch_size=batch_size, progress=progress)
