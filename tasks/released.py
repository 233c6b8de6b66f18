"""Released heads and offsets as pipeline inputs, and our own heads written in that layout.

An encoder entry's `released:` block names a projection checkpoint and, optionally, a
folder of offsets in the official layout (`text_embed_mean.pkl`, `img_embed_mean.pkl`),
each a local path or `hf://<owner>/<repo>/<path>[@revision]` (the paper's files:
SoyeonHH/TextME, `projections/target_encoders/<enc>.pt`, `projections/languagebind/*.pt`,
`offsets/<enc>_<data>/`). Hub files are downloaded with huggingface_hub into its cache
(a pinned `@revision` is read from its snapshot), never at import time; offline, the
cached copy is used, and a file the cache lacks is one line naming the file and how to
point at a local copy.

The `released` stage (one per such encoder) checks the files (the head loads; its input
width matches the offsets and the encoder), copies the head into the workdir
(`projections/<key>.pt`) and the offsets into our format (`offsets/<key>/`), so the
evaluate stage reads them like its own, and returns a manifest shaped like a train
manifest. Its key is built from the files' sha256 (a changed file re-evaluates); results
rows name the files in their lineage columns: `projection_fp` =
`released:<file name>@sha256:<64 hex>`, `offset_fp` = `released:<folder>@sha256:<64 hex>`
(the sha256 over both pickles' hashes), or our own offsets' key when `offset:` is null.

`export_heads` goes the other way: the current config's trained heads and offsets, in
the official layout, for `textme export` (and for `released:` blocks of other configs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.common import STAGE_OPTIONS, logger, write_manifest
from tasks.config import ConfigError, EncoderEntry, PipelineConfig
from tasks.offsets import OFFSET_FILES
from tasks.integrity import checked_head, checked_offset_dir, folder_sha256, sha256_file
from tasks.workspace import Workspace, atomic_write_text

__all__ = [
    "released",
    "load_released",
    "head_file",
    "offset_files",
    "released_files",
    "released_inputs",
    "export_heads",
    "EXPORT_HEADS",
    "EXPORT_OFFSETS",
]

#: Where `export_heads` puts heads and offsets (the layout of SoyeonHH/TextME).
EXPORT_HEADS, EXPORT_OFFSETS = "projections/target_encoders", "offsets"


def _field(encoder: str, name: str) -> str:
    return f"encoders.{encoder}.released.{name}"


def _hub_file(cfg: PipelineConfig, spec: str, where: str, *, local_hint: str) -> Path:
    """Download (or find in huggingface_hub's cache) one file of an hf:// spec."""
    from huggingface_hub import hf_hub_download

    from textme.encoders.hub import offline_reason, parse_hf_file, resolve_revision

    repo_id, filename, revision = parse_hf_file(spec)  # type: ignore[misc]
    offline = offline_reason()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=resolve_revision(repo_id, revision),
                                    local_files_only=offline is not None))
    except Exception as exc:  # offline, missing file, no access: one line for the user
        why = offline or (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(f"{cfg.path}: {where}: {filename!r} of {repo_id!r} could not be fetched from the "
                          f"Hugging Face hub ({why}); download it elsewhere (`hf download {repo_id} "
                          f"{filename}`) and set `{where}: {local_hint}`") from None


def _released(cfg: PipelineConfig, encoder: str) -> EncoderEntry:
    entry = cfg.encoders[encoder]
    if entry.released is None:
        raise KeyError(f"encoder {encoder!r} has no released block")
    return entry


def head_file(cfg: PipelineConfig, encoder: str) -> Path:
    """The released head of `encoder` as a local file (downloaded into the hub cache if hf://)."""
    spec = _released(cfg, encoder).released.head
    where = _field(encoder, "head")
    if spec.startswith("hf://"):
        return _hub_file(cfg, spec, where, local_hint=f"/local/{Path(spec.split('@')[0]).name}")
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"{cfg.path}: {where}: released head {path} not found")
    return path


_OFFSET_FILES = ("text_embed_mean.pkl", "img_embed_mean.pkl")


def offset_files(cfg: PipelineConfig, encoder: str) -> tuple[Path, Path] | None:
    """(text_embed_mean.pkl, img_embed_mean.pkl) of the released offset folder, or None."""
    spec = _released(cfg, encoder).released.offset
    if spec is None:
        return None
    where = _field(encoder, "offset")
    if spec.startswith("hf://"):
        folder, _, revision = spec.partition("@")
        suffix = f"@{revision}" if revision else ""
        hint = f"/local/{Path(folder).name}  (a folder holding {' and '.join(_OFFSET_FILES)})"
        text, modal = (_hub_file(cfg, f"{folder.rstrip('/')}/{name}{suffix}", where, local_hint=hint)
                       for name in _OFFSET_FILES)
        return text, modal
    root = Path(spec)
    missing = [name for name in _OFFSET_FILES if not (root / name).is_file()]
    if missing:
        what = "folder not found" if not root.is_dir() else f"no {' or '.join(missing)} in it"
        raise ConfigError(f"{cfg.path}: {where}: released offset folder {root}: {what} "
                          f"(expected {' and '.join(_OFFSET_FILES)}, the official layout)")
    return root / _OFFSET_FILES[0], root / _OFFSET_FILES[1]


def released_files(cfg: PipelineConfig, encoder: str) -> dict[str, Any]:
    """Local paths and sha256 of an encoder's released files (what keys and lineage use)."""
    from textme.encoders.hub import sha256_file

    entry = _released(cfg, encoder)
    head = head_file(cfg, encoder)
    out: dict[str, Any] = {"head": {"source": entry.released.head, "path": str(head), "sha256": sha256_file(head)}}
    files = offset_files(cfg, encoder)
    if files is not None:
        text, modal = files
        out["offset"] = {"source": entry.released.offset, "text": str(text), "modal": str(modal),
                         "text_sha256": sha256_file(text), "modal_sha256": sha256_file(modal)}
    return out


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _hub_sha256(spec: str) -> str | None:
    """sha256 of a hub file without downloading it: from the local hub cache, or (online)
    the hub's LFS metadata (an LFS file's etag is its sha256). None when neither knows."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    from textme.encoders.hub import is_offline, parse_hf_file, resolve_revision, sha256_file

    repo_id, filename, revision = parse_hf_file(spec)  # type: ignore[misc]
    revision = resolve_revision(repo_id, revision)
    try:
        return sha256_file(hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
    except Exception:
        pass
    if is_offline():
        return None
    try:
        etag = (get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision)).etag or "")
    except Exception:
        return None
    etag = etag.removeprefix("W/").strip('"')
    return etag if _SHA256.fullmatch(etag) else None  # a small (non-LFS) file's etag is a git sha1


def _sha256(cfg: PipelineConfig, spec: str, local: Any) -> str:
    """sha256 of a released file; `local()` gives its path (downloading if it must)."""
    from textme.encoders.hub import sha256_file

    if spec.startswith("hf://"):
        known = _hub_sha256(spec)
        if known is not None:
            return known
    return sha256_file(local())


def released_inputs(cfg: PipelineConfig, encoder: str) -> dict[str, Any]:
    """The content hashes behind a released head: the stage key's inputs. Hub files are
    not downloaded for this when the hub cache or the hub's metadata knows their sha256
    (so `textme status` stays cheap); the stage itself downloads them."""
    entry = _released(cfg, encoder)
    head = _sha256(cfg, entry.released.head, lambda: head_file(cfg, encoder))
    if entry.released.offset is None:
        return {"head_sha256": head, "offset": None}
    folder, _, revision = entry.released.offset.partition("@")
    suffix = f"@{revision}" if revision else ""
    text, modal = (_sha256(cfg, f"{folder.rstrip('/')}/{name}{suffix}", lambda i=i: offset_files(cfg, encoder)[i])
                   for i, name in enumerate(_OFFSET_FILES))
    return {"head_sha256": head, "offset": {"text": text, "modal": modal}}


def _name(source: str) -> str:
    return Path(source.split("@")[0].rstrip("/")).name


def _offset_fp(off: dict[str, Any]) -> str:
    both = hashlib.sha256(f"{off['text_sha256']}\n{off['modal_sha256']}\n".encode()).hexdigest()
    return f"released:{_name(off['source'])}@sha256:{both}"


def _write_bytes(dst: Path, data: bytes) -> None:
    """Write `data` to `dst` atomically (temporary name, then rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _copy(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` atomically (temporary name, then rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_released(cfg: PipelineConfig, encoder: str, offset: dict[str, Any] | None) -> dict[str, Any]:
    """Check and stage one encoder's released head (+ offsets); its manifest.

    `offset`: the pipeline's own offsets manifest, used when `released.offset` is null."""
    from textme import CheckpointError, Offset, load_offset, load_official_offset, save_offset
    from textme.projector import read_projection_metadata

    key = keys.released_key(cfg, encoder, offset)
    files = released_files(cfg, encoder)
    head_src = Path(files["head"]["path"])
    where = _field(encoder, "head")
    try:
        meta = read_projection_metadata(head_src)
    except (CheckpointError, FileNotFoundError) as err:
        raise ConfigError(f"{cfg.path}: {where}: {err}") from None
    ws = Workspace.of(cfg)
    folder = ws.offset_dir(key)
    off = files.get("offset")
    if off is not None:
        try:
            mu = Offset(load_official_offset(off["text"]), load_official_offset(off["modal"]))
        except ValueError as err:
            raise ConfigError(f"{cfg.path}: {_field(encoder, 'offset')}: {err}") from None
        offset_fp = _offset_fp(off)
    elif offset is not None:
        mu = load_offset(checked_offset_dir(cfg, offset["dir"], offset.get("sha256"), encoder))
        offset_fp = offset["offset_fp"]
    else:  # the config model guarantees one of the two
        raise ConfigError(f"{cfg.path}: encoders.{encoder}: the released head needs offsets")
    if mu.dim != meta["in_dim"]:
        raise ConfigError(f"{cfg.path}: {where}: the head takes {meta['in_dim']}-d inputs but its offsets are "
                          f"{mu.dim}-d ({off['source'] if off else 'our own offsets'})")
    dim = keys.encoder_of(cfg, encoder).dim
    if dim != meta["in_dim"]:
        raise ConfigError(f"{cfg.path}: {where}: the head takes {meta['in_dim']}-d inputs but encoder "
                          f"{encoder!r} gives {dim}-d vectors (another model than the head was trained on?)")
    save_offset(mu, folder, encoder=encoder, stage_key=key, released=off["source"] if off else None)
    head = ws.projection(key)
    if not head.is_file() or sha256_file(head) != files["head"]["sha256"]:
        _copy(head_src, head)
    projection_fp = f"released:{_name(files['head']['source'])}@sha256:{files['head']['sha256']}"
    logger().info("released %s: head %s (%d -> %d), offsets %s", encoder, files["head"]["source"],
                  meta["in_dim"], meta["out_dim"], off["source"] if off else f"ours ({offset_fp})")
    manifest = {
        "stage": "released",
        "encoder": encoder,
        "variant": "released",
        "projection_fp": projection_fp,
        "path": str(head),
        "source": files["head"]["source"],
        "head_sha256": files["head"]["sha256"],
        "sha256": sha256_file(head),
        "offset_fp": offset_fp,
        "offset_dir": str(folder),
        "offset_sha256": folder_sha256(folder, OFFSET_FILES),
        "offset_source": off["source"] if off else None,
        "in_dim": meta["in_dim"],
        "out_dim": meta["out_dim"],
        "captions": [],
        "history": [],
    }
    return write_manifest(ws, key, manifest)


@task(name="released", task_run_name="released-{encoder}", cache_policy=checked(keys.released_key_fn), **STAGE_OPTIONS)
def released(config: str, encoder: str, offset: dict[str, Any] | None) -> dict[str, Any]:
    """Prefect task: offset = our offsets manifest when `released.offset` is null, else None."""
    return load_released(keys.load_snapshot(config), encoder, offset)


# --------------------------------------------------------------------------- export


def export_heads(cfg: PipelineConfig, out: str | os.PathLike, encoders: list[str] | None = None) -> list[dict[str, Any]]:
    """Write the config's current trained heads and offsets in the official layout.

    `out/projections/target_encoders/<encoder>.pt` (our checkpoint, with the state dict
    also under `projector_state_dict`, the name the official evaluator reads) and
    `out/offsets/<encoder>_<offset dataset>/{text,img}_embed_mean.pkl`, plus
    `out/textme-export.json` (what was exported, with sha256 and stage keys). Returns its
    entries; each has the `released:` block that uses the files. Heads must be trained:
    a one-line ConfigError names what is missing.
    """
    import torch

    from textme.encoders.hub import sha256_file
    from tasks.plan import replay

    rep = replay(cfg)
    names = encoders or [e for e, entry in cfg.encoders.items() if entry.train]
    if not names:
        raise ConfigError(f"{cfg.path}: no trained heads to export (every encoder has train: false)")
    out = Path(out)
    entries = []
    for e in names:
        if e not in cfg.encoders:
            raise ConfigError(f"{cfg.path}: unknown encoder {e!r} (known: {', '.join(cfg.encoders)})")
        head_st, off_st = rep.heads[e]["textme"], rep.heads[e]["offset"]
        if head_st is None:
            raise ConfigError(f"{cfg.path}: encoders.{e}: has no trained head (train: false)")
        if head_st.manifest is None or off_st is None or off_st.manifest is None:
            raise ConfigError(f"{cfg.path}: encoders.{e}: no trained head for the current config "
                              f"(train {head_st.status}); run `textme run` first")
        head_dst = out / EXPORT_HEADS / f"{e}.pt"
        ckpt = torch.load(checked_head(cfg, head_st.manifest), map_location="cpu", weights_only=True)
        ckpt["projector_state_dict"] = ckpt["state_dict"]  # shared tensors: stored once
        buffer = io.BytesIO()  # not a file name: torch.save would put the temporary name in the archive
        torch.save(ckpt, buffer)
        _write_bytes(head_dst, buffer.getvalue())  # the same head exports to the same bytes (sha256)
        off_dir = out / EXPORT_OFFSETS / f"{e}_{cfg.encoders[e].offset_dataset}"
        ours = checked_offset_dir(cfg, off_st.manifest["dir"], off_st.manifest.get("sha256"), e)
        for name in _OFFSET_FILES:
            _copy(ours / name, off_dir / name)
        entries.append({
            "encoder": e,
            "head": str(head_dst),
            "head_sha256": sha256_file(head_dst),
            "offset": str(off_dir),
            "projection_fp": head_st.manifest["projection_fp"],
            "offset_fp": off_st.manifest["offset_fp"],
            "normalize": cfg.encoders[e].normalize,
            "released": {"head": f"{EXPORT_HEADS}/{e}.pt", "offset": f"{EXPORT_OFFSETS}/{off_dir.name}"},
        })
    atomic_write_text(out / "textme-export.json", json.dumps({"config": cfg.path, "heads": entries}, indent=1))
    return entries
