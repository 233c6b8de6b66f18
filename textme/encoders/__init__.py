"""Encoders behind one interface: built-in adapters, plugins, and precomputed vectors.

    from textme.encoders import get_encoder
    clip = get_encoder("clip")                    # open_clip ViT-H-14 laion2b_s32b_b79k
    pivot = get_encoder("qwen3-embedding")        # Qwen/Qwen3-Embedding-4B
    vecs = clip.encode_text(["a dog on the grass"])   # float32 [1, 1024], unit rows

Built-ins: qwen3-embedding, open-clip, clip, remoteclip, uni3d-text, clap, precomputed,
composite. Installed packages add more through the `textme.encoders` entry point group.
Weights load lazily, at the first encode; `identity(tower)` never loads them.
"""

from __future__ import annotations

from .base import Encoder
from .errors import BadItemError, EncoderError, EncoderInputError, ModelUnavailableError, UnknownEncoderError
from .registry import ENTRY_POINT_GROUP, get_encoder, list_encoders, register_encoder

# Importing the adapter modules registers the built-in names (heavy libraries load lazily).
from . import clap, composite, openclip, precomputed, qwen3  # noqa: E402,F401  isort: skip

__all__ = [
    "ENTRY_POINT_GROUP",
    "BadItemError",
    "Encoder",
    "EncoderError",
    "EncoderInputError",
    "ModelUnavailableError",
    "UnknownEncoderError",
    "get_encoder",
    "list_encoders",
    "register_encoder",
]
