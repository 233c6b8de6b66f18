"""Check everything a run needs before anything is written.

`preflight` resolves every encoder name and checks every encoder option against the
encoder's factory (`check_encoder_options`: a typo such as `dimm:` is named before
anything runs), reads every caption source (present, readable, caption column there
and not empty), and checks item folders and evaluation manifests. It raises the first
problem as a one-line error (ConfigError, SourceError, InputError or an encoder error),
so `textme run` can fail before touching the cache.

Paths under `<workdir>/demo` of a `demo: true` config are only checked once the demo
assets exist (`assets_ready=True`): the pipeline builds them first.
"""

from __future__ import annotations

from pathlib import Path

from tasks.config import ConfigError, PipelineConfig
from tasks.inputs import list_items, read_eval_manifest
from tasks.sources import read_captions
from tasks.workspace import Workspace

__all__ = ["preflight", "check_encoder_options", "used_datasets", "text_datasets", "pivot_datasets",
           "user_errors"]


def used_datasets(cfg: PipelineConfig) -> list[str]:
    """Datasets some encoder trains on or takes offsets from, in config order."""
    used = {d for e in cfg.encoders for d in text_datasets(cfg, e)}
    return [d for d in cfg.datasets if d in used]


def text_datasets(cfg: PipelineConfig, encoder: str) -> list[str]:
    """Datasets an encoder's text tower embeds: its training captions (when it trains) +
    offset captions (when the pipeline computes its offsets); empty for a released-only one."""
    entry = cfg.encoders[encoder]
    train = list(entry.train_on) if entry.train else []
    return list(dict.fromkeys(train + ([entry.offset_dataset] if entry.own_offsets else [])))


def pivot_datasets(cfg: PipelineConfig) -> list[str]:
    """Datasets the pivot embeds: every training encoder's training captions."""
    return list(dict.fromkeys(d for e in cfg.encoders.values() if e.train for d in e.train_on))


def _pending(cfg: PipelineConfig, path: str | None, assets_ready: bool) -> bool:
    """True for a demo path that cannot exist yet."""
    if not cfg.demo or assets_ready or path is None:
        return False
    demo = Workspace.of(cfg).demo
    return Path(path) == demo or demo in Path(path).parents


def check_encoder_options(cfg: PipelineConfig) -> None:
    """Every encoder name is registered, every option one its factory takes (no model is
    built): `<file>: encoders.<name>.options.<option>: unknown option ... (accepted: ...)`."""
    from textme.encoders import list_encoders
    from textme.encoders.errors import UnknownEncoderError
    from textme.encoders.registry import OptionError, check_options

    refs = [("pivot", cfg.pivot)] + [(f"encoders.{n}", e) for n, e in cfg.encoders.items()]
    for where, ref in refs:
        if "normalize" in ref.options:
            field = f"{where}.normalize" if where != "pivot" else "the encoder entries' normalize"
            raise ConfigError(f"{cfg.path}: {where}.options.normalize: not an encoder option; set {field}")
        try:
            check_options(ref.encoder, ref.options)
        except UnknownEncoderError:
            known = ", ".join(list_encoders())
            raise ConfigError(f"{cfg.path}: {where}.encoder: unknown encoder {ref.encoder!r} (known: {known})") from None
        except OptionError as err:
            raise ConfigError(f"{cfg.path}: {where}.options.{err.path}: {err.reason}") from None
        except ImportError as err:  # a plugin that cannot be imported
            raise ConfigError(f"{cfg.path}: {where}.encoder: {err}") from None


def preflight(cfg: PipelineConfig, *, assets_ready: bool = True) -> None:
    check_encoder_options(cfg)
    for name in used_datasets(cfg):
        spec = cfg.datasets[name]
        if not _pending(cfg, spec.source, assets_ready):
            read_captions(spec, name)
    for name in {e.offset_dataset for e in cfg.encoders.values() if e.own_offsets}:
        items = cfg.datasets[name].items
        if not _pending(cfg, items, assets_ready):
            list_items(items)
    _check_released(cfg, assets_ready)
    for spec in cfg.evaluation:
        if not _pending(cfg, spec.inputs_path, assets_ready):
            read_eval_manifest(spec)
    if assets_ready or not cfg.demo:
        from tasks.keys import encoder_identity

        encoder_identity(cfg, "pivot", "text")
        for name in cfg.encoders:
            encoder_identity(cfg, name, "text")


def _check_released(cfg: PipelineConfig, assets_ready: bool) -> None:
    """Released heads and offsets are there (hub files: downloaded into its cache now, or
    found there offline), the head is a readable checkpoint, the pickles readable offsets."""
    for name, entry in cfg.encoders.items():
        if entry.released is None or _pending(cfg, entry.released.head, assets_ready):
            continue
        # Here, not above: a config without released heads checks nothing that needs torch.
        from textme import CheckpointError, load_official_offset
        from textme.projector import read_projection_metadata

        from tasks.released import head_file, offset_files

        head = head_file(cfg, name)
        try:
            read_projection_metadata(head)
        except CheckpointError as err:
            raise ConfigError(f"{cfg.path}: encoders.{name}.released.head: {err}") from None
        if entry.released.offset is not None and not _pending(cfg, entry.released.offset, assets_ready):
            for path in offset_files(cfg, name):
                try:
                    load_official_offset(path)
                except ValueError as err:
                    raise ConfigError(f"{cfg.path}: encoders.{name}.released.offset: {err}") from None


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, shown as one line (no traceback) by the CLI."""
    from tasks.inputs import InputError
    from tasks.sources import SourceError
    from textme.encoders.errors import EncoderError

    return (ConfigError, SourceError, InputError, EncoderError)

