"""TextME, the method: text-only projection of many encoders into one LLM space.

A library for arrays in hand (torch + numpy; no Prefect, no storage layout). The
official README's names work unchanged::

    from textme import ProjectionHead, HardNegativeContrastiveLoss, process_embeddings

Encoders live in `textme.encoders`, which is not imported here (it pulls in the model
libraries); metrics in `textme.metrics`.
"""

__version__ = "0.1.0"

#: Version of what this package computes. The pipeline puts it into cache keys of
#: every stage that calls `textme` (offsets, training, projection, evaluation).
#: Bump it whenever the same inputs would give different outputs: the loss, the head,
#: the training loop or its defaults, centring, or a metric's definition. Do not bump
#: it for refactors, messages, or speed-ups that leave outputs unchanged.
METHOD_VERSION = "textme-method-1"

# The names below load on first use (PEP 562), not when `textme` is imported: every
# `textme.*` import runs this file, and the pipeline imports `textme.encoders.hub` or
# `textme.data` where no torch is needed (config checks, cache keys, a no-change re-run).
# `from textme import ProjectionHead` works as before; it imports torch then.
_LAZY = {
    "textme.losses": ("HardNegativeContrastiveLoss", "InfoNCELoss", "MSEAlignmentLoss", "make_loss"),
    "textme.offsets": ("Offset", "centroid", "load_official_offset", "load_offset", "process_embeddings",
                       "save_official_offset", "save_offset"),
    "textme.projector": ("CheckpointError", "ProjectionHead", "load_projection", "read_projection_metadata",
                         "save_projection"),
    "textme.training": ("TrainConfig", "UncentredShift", "lr_at", "project", "train_projection",
                        "train_projection_with_uncentred"),
}
_LAZY_MODULE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _LAZY_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module 'textme' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_MODULE))


__all__ = [
    "__version__",
    "METHOD_VERSION",
    "ProjectionHead",
    "CheckpointError",
    "load_projection",
    "save_projection",
    "read_projection_metadata",
    "HardNegativeContrastiveLoss",
    "InfoNCELoss",
    "MSEAlignmentLoss",
    "make_loss",
    "Offset",
    "centroid",
    "process_embeddings",
    "save_offset",
    "load_offset",
    "save_official_offset",
    "load_official_offset",
    "TrainConfig",
    "lr_at",
    "train_projection",
    "train_projection_with_uncentred",
    "UncentredShift",
    "project",
]
