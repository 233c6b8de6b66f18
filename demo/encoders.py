"""Toy encoders for the embedded demo: a CLIP-like pair of towers and an LLM-like pivot.

They come in through the ``textme.encoders`` entry point group, like any third-party
encoder package (``toy`` and ``toy-pivot`` in pyproject.toml).

``toy`` renders the world's latent of its input through a random linear map ``A``, then
adds a constant per-tower vector and a little noise:

    text tower:  normalise(A @ latent(text)         + gap_text  + noise)
    modal tower: normalise(A @ latent(scene of item) + gap_modal + noise)

``gap_text - gap_modal`` has norm ``gap_norm``: the modality gap, a nearly constant
vector between the two towers, which is the property TextME relies on. ``toy-pivot``
renders the same latent of a text through its own map ``B``, with no gap. Noise is
seeded by a hash of the input (the text, or the item file's bytes), so the same input
always gives the same vector: the embedding cache relies on that.

These are stand-ins (``"stand_in": true`` in every identity): numbers they produce show
the method's mechanics, not any real model's quality.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np

from demo.formats import ItemFormatError, parse_record
from demo.world import Scene, World, normalise
from textme.encoders.base import Encoder
from textme.encoders.errors import BadItemError

# Bump whenever a toy tower's output for the same input and options would change.
EMBED_CODE_VERSION = "toy-embed-1"

# Both towers also share a constant "cone" offset, as real contrastive towers do; with
# it, the cosine between the two towers' centroids is well below 1 but not near 0.
_CONE = 1.0


def _rng(*parts: object) -> np.random.Generator:
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "little"))


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A [rows, cols] matrix with orthonormal columns (or rows, when rows < cols)."""
    g = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, _ = np.linalg.qr(g)
    return q if rows >= cols else q.T


def _check_float(name: str, value: object, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        raise ValueError(f"toy encoder option {name!r} must be a number >= {low}, got {value!r}")
    return float(value)


def _check_int(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"toy encoder option {name!r} must be an int >= {low}, got {value!r}")
    return value


class _ToyBase(Encoder):
    """What both toy encoders share: a world, option checks, identity, dispatch."""

    embed_code_version = EMBED_CODE_VERSION
    default_batch_size = 1024

    def __init__(self, *, world_seed: int = 0, dim: int = 64, device: str = "auto",
                 batch_size: int | None = None) -> None:
        # device and batch_size are accepted (every adapter takes them) and change
        # nothing: the toy towers are numpy and cost microseconds per input.
        super().__init__(device=device, batch_size=batch_size)
        self.world_seed = _check_int("world_seed", world_seed, 0)
        self._dim = _check_int("dim", dim, 2)

    @cached_property
    def world(self) -> World:
        return World(seed=self.world_seed)

    @property
    def dim(self) -> int:
        return self._dim

    def _options(self, tower: str) -> dict:
        raise NotImplementedError

    def _identity(self, tower: str) -> dict:
        return {**self._options(tower), **self.world.latent_params(), "stand_in": True}

    def _encode(self, tower: str, items: list[str], *, batch_size: int,
                progress: bool) -> np.ndarray:
        return np.stack([self._encode_one(tower, x) for x in items])

    def _encode_one(self, tower: str, x: str) -> np.ndarray:
        raise NotImplementedError


class ToyEncoder(_ToyBase):
    """A CLIP-like toy: a text tower and a modal tower with a modality gap between them.

    Options: ``modality`` (image | audio | point), ``tower_seed`` (picks the map A and the
    gap directions: two encoders with different seeds are different models), ``dim``,
    ``gap_norm`` (norm of gap_text - gap_modal; 2.5 puts the two towers' centroids at a
    cosine near 0.26, in the range real CLIP models show), ``noise`` (size of the
    per-input error in the latent, relative to its unit norm), ``world_seed``. With
    ``dim >= latent_dim + 3`` the gap is orthogonal to what captions vary in, as the real
    gap nearly is (so the encoder's own text->modal retrieval does not suffer from it).
    """

    adapter = "toy"
    name = "toy"
    towers = ("text", "modal")

    def __init__(self, *, modality: str = "image", tower_seed: int = 0, dim: int = 64,
                 gap_norm: float = 2.5, noise: float = 0.4, world_seed: int = 0,
                 device: str = "auto", batch_size: int | None = None) -> None:
        super().__init__(world_seed=world_seed, dim=dim, device=device, batch_size=batch_size)
        if modality not in ("image", "audio", "point"):
            raise ValueError(f"toy encoder option 'modality' must be image, audio or point, "
                             f"got {modality!r}")
        self.modality = modality
        self.tower_seed = _check_int("tower_seed", tower_seed, 0)
        self.gap_norm = _check_float("gap_norm", gap_norm)
        self.noise = _check_float("noise", noise)

    def _options(self, tower: str) -> dict:
        # The text tower never looks at the modality: two toys differing only in it
        # share text vectors, so its identity leaves it out.
        modality = {"modality": self.modality} if tower == "modal" else {}
        return {**modality, "tower_seed": self.tower_seed, "dim": self.dim,
                "gap_norm": self.gap_norm, "noise": self.noise}

    @cached_property
    def _geometry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A, gap_text, gap_modal). The gap directions are orthogonal to A's range when
        there is room, as the real gap is nearly orthogonal to what captions vary in."""
        rng = _rng("toy", self.tower_seed, self.dim, self.world.latent_dim)
        latent = self.world.latent_dim
        if self.dim >= latent + 3:
            q = _orthonormal(rng, self.dim, latent + 3)
            a, cone, u_text, u_modal = q[:, :latent], q[:, latent], q[:, latent + 1], q[:, latent + 2]
        else:
            a = _orthonormal(rng, self.dim, latent)
            cone, u_text, u_modal = (normalise(rng.standard_normal(self.dim)) for _ in range(3))
        half = self.gap_norm / np.sqrt(2.0)
        return a, _CONE * cone + half * u_text, _CONE * cone + half * u_modal

    def _noise(self, *key: object) -> np.ndarray:
        """Per-input noise in the latent space (what the encoder gets wrong about the
        meaning), so it blurs semantics without interacting with the gap."""
        latent = self.world.latent_dim
        return self.noise * _rng("toy-noise", self.tower_seed, *key).standard_normal(latent) \
            / np.sqrt(latent)

    def _encode_one(self, tower: str, x: str) -> np.ndarray:
        a, gap_text, gap_modal = self._geometry
        if tower == "text":
            return a @ (self.world.text_latent(x) + self._noise("text", x)) + gap_text
        try:
            with open(x, "rb") as f:
                data = f.read()
            record = parse_record(data, x)
            scene = Scene.from_dict(record["scene"])
        except OSError as e:
            raise BadItemError(x, f"{x}: cannot read item ({e.strerror or e})") from e
        except (ItemFormatError, ValueError) as e:
            raise BadItemError(x, f"toy {self.modality} encoder: {e}") from e
        if record["modality"] != self.modality:
            raise BadItemError(x, f"{x}: an item of modality {record['modality']!r}, but this "
                                  f"toy encoder reads {self.modality} items")
        digest = hashlib.sha256(data).hexdigest()  # noise follows the bytes, as the cache key
        latent = self.world.scene_latent(scene, self.modality) + self._noise("modal", digest)
        return a @ latent + gap_modal


class ToyPivot(_ToyBase):
    """An LLM-embedder-like toy pivot: the same world latent through its own map B.

    Towers ``text`` (documents, training targets) and ``query`` (search queries, as an
    instruction-prefixed query would be): same map, independent noise. No gap.
    """

    adapter = "toy-pivot"
    name = "toy-pivot"
    modality = None
    towers = ("text", "query")

    def __init__(self, *, dim: int = 64, noise: float = 0.1, world_seed: int = 0,
                 device: str = "auto", batch_size: int | None = None) -> None:
        super().__init__(world_seed=world_seed, dim=dim, device=device, batch_size=batch_size)
        self.noise = _check_float("noise", noise)

    def _options(self, tower: str) -> dict:
        return {"dim": self.dim, "noise": self.noise}

    @cached_property
    def _map(self) -> np.ndarray:
        return _orthonormal(_rng("toy-pivot", self.dim, self.world.latent_dim),
                            self.dim, self.world.latent_dim)

    def _encode_one(self, tower: str, x: str) -> np.ndarray:
        noise = _rng("toy-pivot-noise", tower, x).standard_normal(self.dim) / np.sqrt(self.dim)
        return self._map @ self.world.text_latent(x) + self.noise * noise


# Entry points `toy` and `toy-pivot` (pyproject.toml). The classes themselves are the
# factories, so the registry can read their keyword options and name an unknown one.
make_toy_encoder = ToyEncoder
make_toy_pivot = ToyPivot
