"""The toy world behind the embedded demo: scenes, captions and latent vectors.

Random tiny models give chance-level numbers, so the demo also needs encoders whose
towers really do share a meaning. This module is that meaning: a small world of scenes
(an object with a colour, a place, a sound and a size), rendered into varied captions,
plus a latent vector for every attribute value. A scene's latent is the normalised sum
of the vectors of the attributes its modality can perceive (an image shows colour, a
sound does not); a caption's latent is the same sum over the words it uses, so an edited
caption lands somewhere different but sensible. Everything is pure numpy and a
deterministic function of the seed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

# Bump when captions, latents or splits would change for the same seed.
WORLD_VERSION = "toy-world-1"

MODALITIES = ("image", "audio", "point")

# attribute -> value -> surface words (the first is the canonical name).
ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "object": {
        "dog": ("dog", "puppy", "hound"),
        "cat": ("cat", "kitten", "kitty"),
        "bird": ("bird", "songbird", "sparrow"),
        "horse": ("horse", "pony", "stallion"),
        "cow": ("cow", "calf", "heifer"),
        "sheep": ("sheep", "lamb", "ewe"),
        "duck": ("duck", "duckling", "mallard"),
        "car": ("car", "automobile", "sedan"),
        "truck": ("truck", "lorry", "pickup"),
        "train": ("train", "locomotive", "railcar"),
        "motorcycle": ("motorcycle", "motorbike", "scooter"),
        "guitar": ("guitar", "ukulele", "banjo"),
        "drum": ("drum", "drumkit", "bongo"),
        "clock": ("clock", "timepiece", "alarm"),
        "phone": ("phone", "telephone", "cellphone"),
        "kettle": ("kettle", "teapot", "boiler"),
    },
    "colour": {
        "red": ("red", "crimson", "scarlet"),
        "blue": ("blue", "navy", "azure"),
        "green": ("green", "emerald", "lime"),
        "yellow": ("yellow", "golden", "lemon"),
        "orange": ("orange", "amber", "tangerine"),
        "purple": ("purple", "violet", "lilac"),
        "pink": ("pink", "rosy", "magenta"),
        "brown": ("brown", "tan", "chocolate"),
        "black": ("black", "ebony", "jet"),
        "white": ("white", "snowy", "ivory"),
    },
    "place": {
        "park": ("park", "playground", "garden"),
        "beach": ("beach", "seaside", "shore"),
        "kitchen": ("kitchen", "pantry", "scullery"),
        "street": ("street", "road", "avenue"),
        "forest": ("forest", "woods", "woodland"),
        "farm": ("farm", "farmyard", "ranch"),
        "garage": ("garage", "workshop", "shed"),
        "stage": ("stage", "theater", "auditorium"),
        "station": ("station", "platform", "terminal"),
        "field": ("field", "meadow", "pasture"),
    },
    # How a sound is heard: the audio-only attribute.
    "manner": {
        "loud": ("loudly", "noisily", "boisterously"),
        "quiet": ("quietly", "softly", "faintly"),
        "distant": ("distantly", "remotely", "afar"),
        "close": ("closely", "nearby", "upclose"),
        "repeated": ("repeatedly", "again", "rhythmically"),
        "brief": ("briefly", "momentarily", "shortly"),
        "steady": ("steadily", "continuously", "constantly"),
        "echoing": ("echoing", "reverberating", "resonating"),
    },
    # The point-cloud-only attribute.
    "size": {
        "small": ("small", "tiny", "little"),
        "large": ("large", "big", "huge"),
        "tall": ("tall", "towering", "lofty"),
        "wide": ("wide", "broad", "squat"),
    },
}

# The noise each object makes: audio captions use it, and it means the object.
OBJECT_SOUNDS: dict[str, tuple[str, ...]] = {
    "dog": ("barking", "woofing"), "cat": ("meowing", "purring"),
    "bird": ("chirping", "tweeting"), "horse": ("neighing", "whinnying"),
    "cow": ("mooing", "lowing"), "sheep": ("bleating", "baaing"),
    "duck": ("quacking",), "car": ("honking", "beeping"),
    "truck": ("rumbling", "idling"), "train": ("whistling", "chugging"),
    "motorcycle": ("revving", "roaring"), "guitar": ("strumming", "twanging"),
    "drum": ("drumming", "thumping"), "clock": ("ticking", "tocking"),
    "phone": ("ringing", "buzzing"), "kettle": ("hissing", "bubbling"),
}

# Which attributes each modality perceives (and so puts into a modal item's latent).
VISIBLE: dict[str, tuple[str, ...]] = {
    "image": ("object", "colour", "place"),
    "audio": ("object", "manner", "place"),
    "point": ("object", "colour", "size"),
}

# Caption templates per modality. Some leave an attribute out, as real captions do,
# which makes a few queries genuinely ambiguous.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": (
        "a photo of a {colour} {object} in the {place}",
        "a {colour} {object} at the {place}",
        "a {colour} {object} standing in a {place}",
        "an image showing a {colour} {object} near the {place}",
        "there is a {colour} {object} in this picture of a {place}",
        "{place} scene with a {colour} {object}",
        "close up of a {colour} {object}, {place} in the background",
        "a {object} painted {colour} in the {place}",
        "a snapshot of a {colour} {object}",
        "a picture of a {object} in the {place}",
    ),
    "audio": (
        "a {object} {noise} {manner} in the {place}",
        "the sound of a {object} {noise} {manner} at the {place}",
        "{noise} {manner} from a {object} near the {place}",
        "recording of a {object} {noise} {manner} in a {place}",
        "in the {place} a {object} is {noise} {manner}",
        "someone records a {object} {noise} {manner} by the {place}",
        "audio of {noise} heard {manner} in the {place}",
        "a {object} {noise} {manner}",
        "a {object} {noise} in the {place}",
        "{noise} at the {place} as a {object} sounds {manner}",
    ),
    "point": (
        "a 3d model of a {size} {colour} {object}",
        "a {size} {object} point cloud coloured {colour}",
        "a {colour} {object} 3d shape, {size}",
        "{size} {colour} {object}",
        "point cloud of a {size} {object} painted {colour}",
        "a 3d scan of a {size} {colour} {object}",
        "a {colour} {object} mesh that looks {size}",
        "a {size} {object} model",
        "a 3d rendering of a {colour} {object}",
        "a {size} {colour} {object} object scanned in 3d",
    ),
}

_WORD = re.compile(r"[a-z0-9]+")
_AN = re.compile(r"\b([Aa]) ([aeio])")


@dataclass(frozen=True)
class Scene:
    """One thing happening somewhere: every modality renders a part of it."""

    object: str
    colour: str
    place: str
    manner: str
    size: str

    def visible(self, modality: str) -> tuple[str, ...]:
        """The attribute values this modality perceives, in VISIBLE order."""
        return tuple(getattr(self, a) for a in _visible(modality))

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        try:
            scene = cls(**{a: d[a] for a in ATTRIBUTES})
        except (KeyError, TypeError) as e:
            raise ValueError(f"scene needs fields {list(ATTRIBUTES)}, got {d!r}") from e
        for attr in ATTRIBUTES:
            if getattr(scene, attr) not in ATTRIBUTES[attr]:
                raise ValueError(f"scene field {attr!r}: unknown value {getattr(scene, attr)!r}; "
                                 f"known: {sorted(ATTRIBUTES[attr])}")
        return scene


def _visible(modality: str) -> tuple[str, ...]:
    if modality not in VISIBLE:
        raise ValueError(f"unknown modality {modality!r}; known: {list(VISIBLE)}")
    return VISIBLE[modality]


def _seed(*parts: object) -> int:
    """A stable 64-bit seed from any parts (Python's hash() is salted per process)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little")


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def normalise(v: np.ndarray) -> np.ndarray:
    """L2-normalise along the last axis (zero rows stay zero)."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


class World:
    """Scenes, captions and latents, all fixed by ``seed``.

    ``latent_dim`` is smaller than the number of attribute values, so values are not
    orthogonal: similar-looking scenes are a little confusable, as in real data.
    ``synonym_jitter`` and ``unknown_weight`` make captions differ from the scene they
    describe: each surface word adds its own small offset, and words the world does not
    know (``a``, ``photo``, ``recording``...) add a small random vector of their own.
    """

    def __init__(self, seed: int = 0, latent_dim: int = 32, synonym_jitter: float = 0.2,
                 unknown_weight: float = 0.1, n_eval: int = 200) -> None:
        self.seed = int(seed)
        self.latent_dim = int(latent_dim)
        self.synonym_jitter = float(synonym_jitter)
        self.unknown_weight = float(unknown_weight)
        self.n_eval = int(n_eval)
        self._words: dict[str, np.ndarray] = {}

    def latent_params(self) -> dict:
        """Everything that changes a latent (what encoder identities include)."""
        return {"world_version": WORLD_VERSION, "world_seed": self.seed,
                "latent_dim": self.latent_dim, "synonym_jitter": self.synonym_jitter,
                "unknown_weight": self.unknown_weight}

    def params(self) -> dict:
        """Everything that changes the world's latents, captions and splits."""
        return {**self.latent_params(), "n_eval": self.n_eval}

    # -- latents ---------------------------------------------------------------------

    @cached_property
    def value_vectors(self) -> dict[tuple[str, str], np.ndarray]:
        """(attribute, value) -> unit latent vector."""
        return {(a, v): _unit(np.random.default_rng(_seed(WORLD_VERSION, self.seed, a, v)),
                              self.latent_dim)
                for a, values in ATTRIBUTES.items() for v in values}

    @cached_property
    def vocabulary(self) -> dict[str, tuple[str, str]]:
        """Known surface word -> the (attribute, value) it names."""
        vocab: dict[str, tuple[str, str]] = {}
        for a, values in ATTRIBUTES.items():
            for v, words in values.items():
                for w in words:
                    vocab[w] = (a, v)
        for obj, noises in OBJECT_SOUNDS.items():
            for w in noises:
                vocab[w] = ("object", obj)
        return vocab

    def word_vector(self, word: str) -> np.ndarray:
        """A word's latent contribution: its value's vector plus a per-word jitter, or a
        small random vector for words the world does not know."""
        cached = self._words.get(word)
        if cached is not None:
            return cached
        rng = np.random.default_rng(_seed(WORLD_VERSION, self.seed, "word", word))
        known = self.vocabulary.get(word)
        if known is None:
            vec = self.unknown_weight * _unit(rng, self.latent_dim)
        else:
            vec = self.value_vectors[known] + self.synonym_jitter * _unit(rng, self.latent_dim)
        vec.setflags(write=False)
        if len(self._words) < 100_000:  # arbitrary text could bring unbounded vocabularies
            self._words[word] = vec
        return vec

    def text_latent(self, text: str) -> np.ndarray:
        """Latent of any text: the normalised sum of its words' contributions."""
        words = _WORD.findall(text.lower())
        if not words:
            return np.zeros(self.latent_dim)
        return normalise(sum(self.word_vector(w) for w in words))

    def scene_latent(self, scene: Scene, modality: str) -> np.ndarray:
        """Latent of a scene as one modality perceives it."""
        vecs = [self.value_vectors[(a, getattr(scene, a))] for a in _visible(modality)]
        return normalise(np.sum(vecs, axis=0))

    # -- captions --------------------------------------------------------------------

    def caption(self, scene: Scene, modality: str, rng: np.random.Generator,
                template: int | None = None) -> str:
        """One caption of ``scene`` in ``modality``'s style, with random template and words."""
        _visible(modality)
        templates = TEMPLATES[modality]
        t = templates[int(rng.integers(len(templates))) if template is None else template]
        fill = {a: _pick(rng, ATTRIBUTES[a][getattr(scene, a)]) for a in ATTRIBUTES}
        fill["noise"] = _pick(rng, OBJECT_SOUNDS[scene.object])
        return _AN.sub(r"\1n \2", t.format(**fill))

    # -- scenes and splits -----------------------------------------------------------

    def random_scene(self, rng: np.random.Generator) -> Scene:
        return Scene(**{a: _pick(rng, tuple(values)) for a, values in ATTRIBUTES.items()})

    @cached_property
    def eval_scenes(self) -> tuple[Scene, ...]:
        """Held-out scenes, unique in what each modality sees (so every retrieval target is
        distinguishable in principle). Training captions and offset items never show them."""
        rng = np.random.default_rng(_seed(WORLD_VERSION, self.seed, "eval"))
        seen: dict[str, set] = {m: set() for m in MODALITIES}
        scenes: list[Scene] = []
        for _ in range(1000 * self.n_eval):
            if len(scenes) == self.n_eval:
                break
            s = self.random_scene(rng)
            if any(s.visible(m) in seen[m] for m in MODALITIES):
                continue
            for m in MODALITIES:
                seen[m].add(s.visible(m))
            scenes.append(s)
        if len(scenes) < self.n_eval:
            raise ValueError(f"world: cannot find {self.n_eval} evaluation scenes that differ "
                             f"in every modality (found {len(scenes)}); lower n_eval")
        return tuple(scenes)

    def is_held_out(self, scene: Scene, modality: str) -> bool:
        """True when ``modality``'s view of ``scene`` is one an eval scene shows."""
        return scene.visible(modality) in self._held_out[modality]

    @cached_property
    def _held_out(self) -> dict[str, set]:
        return {m: {s.visible(m) for s in self.eval_scenes} for m in MODALITIES}

    def train_scenes(self, modality: str, n: int, stream: str = "train") -> list[Scene]:
        """``n`` random scenes whose view in ``modality`` is not held out (repeats allowed).
        ``stream`` names an independent random stream (captions vs offset items)."""
        rng = np.random.default_rng(_seed(WORLD_VERSION, self.seed, stream, modality))
        out: list[Scene] = []
        while len(out) < n:  # ends: most views are not held out (n_eval is small)
            s = self.random_scene(rng)
            if not self.is_held_out(s, modality):
                out.append(s)
        return out

    def train_captions(self, modality: str, n: int) -> list[tuple[Scene, str]]:
        """``n`` distinct captions (after case and space folding) of non-held-out scenes."""
        rng = np.random.default_rng(_seed(WORLD_VERSION, self.seed, "captions", modality))
        seen: set[str] = set()
        out: list[tuple[Scene, str]] = []
        limit = 50 * n
        for _ in range(limit):
            if len(out) == n:
                return out
            s = self.random_scene(rng)
            if self.is_held_out(s, modality):
                continue
            c = self.caption(s, modality, rng)
            k = " ".join(c.lower().split())
            if k not in seen:
                seen.add(k)
                out.append((s, c))
        if len(out) < n:
            raise ValueError(f"world could only make {len(out)} distinct {modality} captions, "
                             f"asked for {n}")
        return out

    def eval_captions(self, scene: Scene, modality: str, k: int) -> list[str]:
        """``k`` distinct captions of one eval scene (the multi-caption protocol)."""
        rng = np.random.default_rng(_seed(WORLD_VERSION, self.seed, "eval-captions",
                                          modality, *scene.visible(modality)))
        out: list[str] = []
        for _ in range(100 * k):
            c = self.caption(scene, modality, rng)
            if c not in out:
                out.append(c)
            if len(out) == k:
                break
        return out


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]):
    return options[int(rng.integers(len(options)))]
