"""Input checks and readers: a bad item becomes an `EncoderInputError` naming it (a
`BadItemError`, carrying the item, when one file cannot be read or decoded).

Errors are raised here, before any tensor is built, so a user sees
`text 3: empty string` or `audio a.wav: sample rate 16000 Hz, expected 48000 Hz`
instead of a shape error from deep inside torch.

Audio is read with the standard library's `wave` module plus numpy (PCM WAV, 8/16/24/32
bit): no extra dependency, and it is exactly what CLAP's 48 kHz inputs need. Other
formats (float WAV, FLAC, MP3) must be converted first, e.g.
`ffmpeg -i in.flac -ar 48000 -acodec pcm_s16le out.wav`.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadItemError, EncoderInputError


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_texts(texts: Any) -> list[str]:
    """A list of non-empty strings, or an error naming the first bad index and value."""
    if isinstance(texts, (str, bytes)):
        raise EncoderInputError(f"expected a list of texts, got a single {type(texts).__name__}: "
                                f"{_show(texts)} (wrap it in a list)")
    try:
        items = list(texts)
    except TypeError:
        raise EncoderInputError(f"expected a list of texts, got {type(texts).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise EncoderInputError(f"text {i}: expected str, got {type(t).__name__} {_show(t)}")
        if not t.strip():
            raise EncoderInputError(f"text {i}: empty string {_show(t)}")
    return items


def check_items(items: Any) -> list[str]:
    """A list of file paths (str or PathLike), as strings."""
    if isinstance(items, (str, bytes, os.PathLike)):
        raise EncoderInputError(f"expected a list of file paths, got a single path {_show(items)} "
                                f"(wrap it in a list)")
    try:
        seq = list(items)
    except TypeError:
        raise EncoderInputError(f"expected a list of file paths, got {type(items).__name__}") from None
    out: list[str] = []
    for i, item in enumerate(seq):
        if not isinstance(item, (str, os.PathLike)) or not str(item):
            raise EncoderInputError(f"item {i}: expected a file path, got {type(item).__name__} "
                                    f"{_show(item)}")
        out.append(os.fspath(item))
    return out


def load_image(path: str) -> "Any":
    """An RGB PIL image, or an error naming the file and why it could not be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise BadItemError(path, f"image {path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BadItemError(path, f"image {path}: cannot be read as an image ({err})") from None


def read_wav(path: str, expected_rate: int) -> np.ndarray:
    """Mono float32 waveform in [-1, 1] at `expected_rate`; channels are averaged.

    A file at another rate is refused rather than silently resampled: resampling changes
    the embedding, and which resampler was used would have to become part of the identity.
    """
    try:
        with wave.open(path, "rb") as w:
            rate, width, channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise BadItemError(path, f"audio {path}: file not found") from None
    except (wave.Error, EOFError, OSError) as err:
        raise BadItemError(path, f"audio {path}: cannot be read as PCM WAV ({err}); convert it, e.g. "
                                 f"`ffmpeg -i IN -ar {expected_rate} -acodec pcm_s16le OUT.wav`") from None
    if rate != expected_rate:
        raise BadItemError(path, f"audio {path}: sample rate {rate} Hz, expected {expected_rate} Hz; "
                                 f"resample it first (e.g. `ffmpeg -i IN -ar {expected_rate} OUT.wav`)")
    if len(raw) < n * width * channels:
        raise BadItemError(path, f"audio {path}: truncated ({len(raw)} bytes of samples, its header "
                                 f"promises {n * width * channels})")
    try:
        samples = _pcm_to_float(raw, width)
    except EncoderInputError as err:
        raise BadItemError(path, f"audio {path}: {err}") from None
    if samples.size == 0:
        raise BadItemError(path, f"audio {path}: no samples")
    return samples.reshape(-1, channels).mean(axis=1).astype(np.float32)


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:  # 24-bit little-endian: widen to int32 by hand
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    raise EncoderInputError(f"unsupported WAV sample width {width} bytes")


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, rate: int) -> None:
    """16-bit PCM mono WAV writer (for tests and the demo's generated audio)."""
    pcm = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((pcm * 32767.0).astype("<i2").tobytes())


def load_point_cloud(path: str, channels: Sequence[int] = (3, 6)) -> np.ndarray:
    """A float32 point cloud [n, 3] (xyz) or [n, 6] (xyz + rgb) from a .npy file.

    For point-cloud plugins (Uni3D's point tower): the shape check happens here, naming
    the file and the shape found.
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BadItemError(path, f"point cloud {path}: file not found") from None
    except (ValueError, OSError) as err:
        raise BadItemError(path, f"point cloud {path}: cannot be read as .npy ({err})") from None
    if arr.ndim != 2 or arr.shape[1] not in channels or arr.shape[0] == 0:
        want = " or ".join(f"[n, {c}]" for c in channels)
        raise BadItemError(path, f"point cloud {path}: shape {list(arr.shape)}, expected {want}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise BadItemError(path, f"point cloud {path}: values must be finite numbers")
    return arr.astype(np.float32)


MODAL_KEYS = ("stem", "name", "path", "sha256")


def item_id(path: str, how: str) -> str:
    """The key a precomputed modal file is indexed by: file stem, name, path, or sha256."""
    if how == "stem":
        return Path(path).stem
    if how == "name":
        return Path(path).name
    if how == "path":
        return path
    if how == "sha256":
        from .hub import sha256_file

        try:
            return sha256_file(path)
        except FileNotFoundError:
            raise BadItemError(path, f"item {path}: file not found") from None
    raise ValueError(f"modal_key {how!r}: expected one of {', '.join(MODAL_KEYS)}")
