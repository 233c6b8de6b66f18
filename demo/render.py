"""Render a scene as a small image, sound or point cloud (pure numpy).

The tiny real models read these as ordinary media, so the shapes, tones and colours
only need to be plausible and to vary with the scene; nothing downstream depends on
them being good art. Small per-item jitter (position, pitch, point sampling) is seeded
by the item id, so two items of one scene are different files with different bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from demo.formats import SAMPLE_RATE
from demo.world import ATTRIBUTES, Scene

IMAGE_SIZE = 32
AUDIO_SECONDS = 0.25
N_POINTS = 256

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60),
    "yellow": (240, 220, 40), "orange": (245, 140, 20), "purple": (130, 40, 170),
    "pink": (250, 140, 190), "brown": (120, 70, 30), "black": (15, 15, 15),
    "white": (245, 245, 245),
}

# place -> (upper, lower) background colours
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "park": ((150, 200, 240), (70, 150, 60)), "beach": ((120, 190, 250), (230, 210, 150)),
    "kitchen": ((235, 230, 215), (160, 150, 140)), "street": ((170, 180, 190), (90, 90, 95)),
    "forest": ((60, 110, 70), (50, 80, 40)), "farm": ((170, 210, 240), (170, 140, 80)),
    "garage": ((120, 120, 125), (70, 70, 75)), "stage": ((40, 20, 60), (110, 60, 40)),
    "station": ((190, 190, 200), (130, 125, 120)), "field": ((160, 210, 250), (150, 190, 80)),
}

OBJECTS = tuple(ATTRIBUTES["object"])
PLACES = tuple(ATTRIBUTES["place"])
MANNERS = tuple(ATTRIBUTES["manner"])


def _rng(item_id: str, what: str) -> np.random.Generator:
    h = hashlib.sha256(f"{what}\x1f{item_id}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


# -- images -------------------------------------------------------------------------------

def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """One of 16 simple shapes on coordinates u, v (centred on the object)."""
    d = np.hypot(u, v)
    theta = np.arctan2(v, u)
    shapes = [
        d < r,                                                      # disc
        np.maximum(abs(u), abs(v)) < r,                             # square
        (v < r) & (abs(u) < (r + v) / 2) & (v > -r),                # triangle
        abs(u) + abs(v) < r,                                        # diamond
        ((abs(u) < r / 3) & (abs(v) < r)) | ((abs(v) < r / 3) & (abs(u) < r)),  # plus
        (d < r) & (d > r / 2),                                      # ring
        (abs(v) < r / 3) & (abs(u) < r),                            # horizontal bar
        (abs(u) < r / 3) & (abs(v) < r),                            # vertical bar
        (u / r) ** 2 + (v / (r / 2)) ** 2 < 1,                      # wide ellipse
        (u / (r / 2)) ** 2 + (v / r) ** 2 < 1,                      # tall ellipse
        d < r * (0.6 + 0.4 * np.cos(5 * theta)),                    # star
        np.maximum(abs(u) * 0.866 + abs(v) * 0.5, abs(v)) < r,      # hexagon
        (abs(abs(u) - abs(v)) < r / 4) & (abs(u) < r),              # cross
        (d < r) & (v > 0),                                          # half disc
        (np.maximum(abs(u), abs(v)) < r) & (np.maximum(abs(u), abs(v)) > r / 2),  # frame
        (np.hypot(abs(u) - r / 2, abs(v) - r / 2) < r / 3),         # four dots
    ]
    return shapes[kind % len(shapes)]


def render_image(scene: Scene, item_id: str) -> np.ndarray:
    """[IMAGE_SIZE, IMAGE_SIZE, 3] uint8: the object's shape in its colour on the place."""
    rng = _rng(item_id, "image")
    n = IMAGE_SIZE
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    top, bottom = BACKGROUNDS[scene.place]
    horizon = n * (0.45 + 0.1 * rng.random())
    img = np.where((y < horizon)[..., None], np.array(top), np.array(bottom)).astype(np.float64)
    img += rng.normal(0, 6, img.shape)  # texture
    cx, cy = n / 2 + rng.uniform(-4, 4), n / 2 + rng.uniform(-4, 4)
    mask = _shape_mask(OBJECTS.index(scene.object), x - cx, y - cy, n * rng.uniform(0.25, 0.35))
    img[mask] = np.array(COLOURS[scene.colour]) + rng.normal(0, 4, (int(mask.sum()), 3))
    return np.clip(img, 0, 255).round().astype(np.uint8)


# -- audio --------------------------------------------------------------------------------

def render_audio(scene: Scene, item_id: str) -> np.ndarray:
    """Mono float samples in [-1, 1] at SAMPLE_RATE: the object's tone, shaped by the
    manner, over the place's background noise."""
    rng = _rng(item_id, "audio")
    t = np.arange(int(SAMPLE_RATE * AUDIO_SECONDS)) / SAMPLE_RATE
    f0 = 110.0 * 2 ** (OBJECTS.index(scene.object) / 3) * rng.uniform(0.98, 1.02)
    manner = scene.manner
    harmonics = 1 if manner == "distant" else 4 if manner == "close" else 2
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k
               for k in range(1, harmonics + 1))
    envelope = {
        "loud": np.full_like(t, 0.9), "quiet": np.full_like(t, 0.15),
        "distant": np.full_like(t, 0.25), "close": np.full_like(t, 0.7),
        "repeated": 0.6 * (np.sin(2 * np.pi * 16 * t) > 0),
        "brief": 0.8 * np.exp(-t / 0.03), "steady": np.full_like(t, 0.5),
        "echoing": np.full_like(t, 0.5),
    }[manner]
    sound = envelope * tone / max(1.0, float(np.abs(tone).max()))
    if manner == "echoing":
        for delay, gain in ((0.04, 0.5), (0.09, 0.25)):
            shift = int(delay * SAMPLE_RATE)
            sound[shift:] += gain * sound[:-shift]
    level = 0.02 + 0.08 * PLACES.index(scene.place) / (len(PLACES) - 1)
    sound += level * rng.standard_normal(len(t))
    return np.clip(sound, -1.0, 1.0)


# -- point clouds --------------------------------------------------------------------------

def _primitive(kind: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """n points on one of 8 primitive surfaces (two object classes share a primitive but
    differ in proportions), inside the unit cube."""
    a = rng.uniform(0, 2 * np.pi, n)
    h = rng.uniform(-1, 1, n)
    kind8, stretch = kind % 8, 1.0 + 0.5 * (kind // 8)
    if kind8 == 0:  # sphere
        p = rng.standard_normal((n, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True)
    elif kind8 == 1:  # cube surface
        p = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        p[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n))
    elif kind8 == 2:  # cylinder
        p = np.stack([np.cos(a), np.sin(a), h], 1)
    elif kind8 == 3:  # cone
        r = (1 - h) / 2
        p = np.stack([r * np.cos(a), r * np.sin(a), h], 1)
    elif kind8 == 4:  # torus
        b = rng.uniform(0, 2 * np.pi, n)
        p = np.stack([(0.7 + 0.3 * np.cos(b)) * np.cos(a), (0.7 + 0.3 * np.cos(b)) * np.sin(a),
                      0.3 * np.sin(b)], 1)
    elif kind8 == 5:  # disc
        r = np.sqrt(rng.uniform(0, 1, n))
        p = np.stack([r * np.cos(a), r * np.sin(a), 0.05 * h], 1)
    elif kind8 == 6:  # helix
        p = np.stack([0.6 * np.cos(4 * a), 0.6 * np.sin(4 * a), a / np.pi - 1], 1)
        p += 0.05 * rng.standard_normal((n, 3))
    else:  # dumbbell
        p = rng.standard_normal((n, 3))
        p = 0.4 * p / np.linalg.norm(p, axis=1, keepdims=True)
        p[:, 0] += np.where(rng.random(n) < 0.5, -0.6, 0.6)
    p[:, 2] *= stretch
    return p


SIZES = {"small": (0.5, 0.5, 0.5), "large": (1.0, 1.0, 1.0), "tall": (0.6, 0.6, 1.6),
         "wide": (1.6, 1.6, 0.6)}


def render_points(scene: Scene, item_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float32 [N_POINTS, 3], rgb uint8 [N_POINTS, 3]) of the object, sized and coloured."""
    rng = _rng(item_id, "point")
    xyz = _primitive(OBJECTS.index(scene.object), rng, N_POINTS) * np.array(SIZES[scene.size])
    rgb = np.clip(np.array(COLOURS[scene.colour]) + rng.normal(0, 8, (N_POINTS, 3)), 0, 255)
    return xyz.astype(np.float32), rgb.round().astype(np.uint8)
