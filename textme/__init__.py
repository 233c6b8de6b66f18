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

from textme.losses import (  # noqa: E402
    HardNegativeContrastiveLoss,
    InfoNCELoss,
    MSEAlignmentLoss,
    make_loss,
)
from textme.offsets import (  # noqa: E402
    Offset,
    centroid,
    load_official_offset,
    load_offset,
    process_embeddings,
    save_official_offset,
    save_offset,
)
from textme.projector import (  # noqa: E402
    CheckpointError,
    ProjectionHead,
    load_projection,
    read_projection_metadata,
    save_projection,
)
from textme.training import (  # noqa: E402
    TrainConfig,
    UncentredShift,
    lr_at,
    project,
    train_projection,
    train_projection_with_uncentred,
)

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
