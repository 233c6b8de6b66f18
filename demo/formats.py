"""Item files that carry their scene: PNG, WAV and PLY writers and a scene reader.

Each generated item is an ordinary media file (a real image, sound or point cloud, so the
tiny real models can read it) that also records the scene it shows in a standard
metadata slot: a PNG ``tEXt`` chunk, a WAV ``LIST/INFO/ICMT`` comment, a PLY header
comment. The toy encoders read that record instead of the pixels, like a perfect
perception model. Writers are byte-deterministic (no timestamps), so the same scene and
item id always give the same file, hence the same cache key.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

METADATA_KEY = "textme-scene"
SUFFIXES = {"image": ".png", "audio": ".wav", "point": ".ply"}
SAMPLE_RATE = 48_000


class ItemFormatError(ValueError):
    """An item file that is not one of ours, or whose scene record is unreadable."""


def scene_record(modality: str, item_id: str, scene: dict) -> str:
    """The compact JSON written into every item (modality included, so bytes differ)."""
    return json.dumps({"item_id": item_id, "modality": modality, "scene": scene},
                      sort_keys=True, separators=(",", ":"))


# -- PNG ---------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bytes(pixels: np.ndarray, text: dict[str, str]) -> bytes:
    """An 8-bit RGB PNG of ``pixels`` [h, w, 3] uint8 with ``text`` as tEXt chunks."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"png_bytes: expected uint8 [h, w, 3], got {pixels.dtype} {pixels.shape}")
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))  # filter 0 per row
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))]
    chunks += [_png_chunk(b"tEXt", k.encode("latin-1") + b"\x00" + v.encode("latin-1"))
               for k, v in text.items()]
    chunks += [_png_chunk(b"IDAT", zlib.compress(raw, 9)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _png_text(data: bytes, path: str) -> dict[str, str]:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ItemFormatError(f"{path}: not a PNG file")
    out, pos = {}, 8
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        if pos + 12 + length > len(data):
            raise ItemFormatError(f"{path}: truncated PNG file ({len(data)} bytes; its "
                                  f"{kind.decode('latin-1')!r} chunk ends at byte {pos + 12 + length})")
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and b"\x00" in body:
            k, v = body.split(b"\x00", 1)
            out[k.decode("latin-1")] = v.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


# -- WAV ---------------------------------------------------------------------------------

def wav_bytes(samples: np.ndarray, comment: str, rate: int = SAMPLE_RATE) -> bytes:
    """A mono 16-bit PCM WAV of ``samples`` (floats in [-1, 1]) with an INFO/ICMT comment.

    The comment chunk comes after ``data`` so readers that stop at ``data`` (Python's
    ``wave``, naive 44-byte header readers) never see it."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    icmt = comment.encode("utf-8") + b"\x00"
    if len(icmt) % 2:
        icmt += b"\x00"
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(icmt)) + icmt
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(pcm)) + pcm + (b"\x00" if len(pcm) % 2 else b"")
            + b"LIST" + struct.pack("<I", len(info)) + info)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _wav_comment(data: bytes, path: str) -> str | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ItemFormatError(f"{path}: not a WAV file")
    pos = 12
    while pos + 8 <= len(data):
        kind, (size,) = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])
        if pos + 8 + size > len(data):
            raise ItemFormatError(f"{path}: truncated WAV file ({len(data)} bytes; its "
                                  f"{kind.decode('latin-1')!r} chunk ends at byte {pos + 8 + size})")
        body = data[pos + 8:pos + 8 + size]
        if kind == b"LIST" and body[:4] == b"INFO":
            sub = 4
            while sub + 8 <= len(body):
                skind, (ssize,) = body[sub:sub + 4], struct.unpack("<I", body[sub + 4:sub + 8])
                if skind == b"ICMT":
                    return body[sub + 8:sub + 8 + ssize].rstrip(b"\x00").decode("utf-8")
                sub += 8 + ssize + (ssize % 2)
        pos += 8 + size + (size % 2)
    return None


# -- PLY ---------------------------------------------------------------------------------

def ply_bytes(xyz: np.ndarray, rgb: np.ndarray, comment: str) -> bytes:
    """A binary little-endian PLY point cloud (float xyz, uchar rgb) with a header comment."""
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"ply_bytes: expected xyz and rgb [n, 3], got {xyz.shape} and {rgb.shape}")
    if "\n" in comment:
        raise ValueError("ply_bytes: comment must be one line")
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"comment {comment}\n"
              f"element vertex {len(xyz)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              "end_header\n").encode("utf-8")
    rec = np.zeros(len(xyz), dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    rec["p"], rec["c"] = xyz, rgb
    return header + rec.tobytes()


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The points of a PLY written by :func:`ply_bytes`: (xyz float32 [n, 3], rgb uint8)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ItemFormatError(f"{path}: not a PLY file")
    n = next(int(line.split()[2]) for line in data[:end].decode("utf-8").splitlines()
             if line.startswith("element vertex"))
    rec = np.frombuffer(data[end + len(b"end_header\n"):], dtype=[("p", "<f4", 3), ("c", "u1", 3)],
                        count=n)
    return rec["p"].copy(), rec["c"].copy()


def _ply_comments(data: bytes, path: str) -> list[str]:
    end = data.find(b"end_header")
    if not data.startswith(b"ply\n") or end < 0:
        raise ItemFormatError(f"{path}: not a PLY file")
    return [line[len("comment "):] for line in data[:end].decode("utf-8", "replace").splitlines()
            if line.startswith("comment ")]


# -- reading a scene back -----------------------------------------------------------------

def read_record(path: str | Path) -> dict:
    """The scene record of an item file: {"item_id", "modality", "scene"}.

    Accepts the PNG, WAV and PLY files above and plain ``.json`` records. Anything else,
    or a file of ours without a record, is an :class:`ItemFormatError` naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ItemFormatError(f"{path}: cannot read item ({e.strerror or e})") from e
    return parse_record(data, str(path))


def parse_record(data: bytes, path: str) -> dict:
    """:func:`read_record` on bytes already read (``path`` gives the suffix and the name
    for errors)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        raw = _png_text(data, path).get(METADATA_KEY)
    elif suffix == ".wav":
        raw = _wav_comment(data, path)
    elif suffix == ".ply":
        raw = next((c[len(METADATA_KEY) + 1:] for c in _ply_comments(data, path)
                    if c.startswith(METADATA_KEY + " ")), None)
    elif suffix == ".json":
        raw = data.decode("utf-8", "replace")
    else:
        raise ItemFormatError(f"{path}: toy items are .png, .wav, .ply or .json files, not {suffix!r}")
    if raw is None:
        raise ItemFormatError(f"{path}: no {METADATA_KEY!r} record in this file "
                              "(only items written by demo.assets carry one)")
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ItemFormatError(f"{path}: scene record is not valid JSON ({e.msg})") from e
    if not isinstance(record, dict) or not {"modality", "scene"} <= set(record):
        raise ItemFormatError(f"{path}: scene record needs 'modality' and 'scene', got {raw[:80]!r}")
    return record
