"""Checksums of the files a result depends on: recorded when written, checked when read.

Each stage's manifest (`manifests/<key>.json`) records the sha256 of what it wrote:

- every manifest: `manifest_sha256`, over its own canonical JSON (`seal`);
- offsets: `sha256` = {file name: digest} of the files in `dir`;
- train, released: `sha256` = the head at `path`; `offset_sha256` = the files of the
  offsets folder `offset_dir` it is used with (None for the uncentred ablation);
- embed_items: `items_sha256` = the item sample sidecar `items_file`.

Table parts (storage/parts.py) and cache segments (storage/segments.py) carry their own.
Readers go through `checked_head`, `checked_offset_dir`, `checked_item_sample`: a file
whose bytes no longer match is never read; `IntegrityError` names it and the repair
(the next `textme run` writes it again: tasks/cache_policy.py turns a damaged output
into a cache miss). `stage_problems` is what a cached stage must pass before its Prefect
record is trusted, and what `textme verify` reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "IntegrityError",
    "Problem",
    "sha256_file",
    "folder_sha256",
    "seal",
    "manifest_problem",
    "check_file",
    "checked_head",
    "checked_offset_dir",
    "checked_item_sample",
    "stage_problems",
    "MANIFEST_SHA256",
]

MANIFEST_SHA256 = "manifest_sha256"
_BLOCK = 1 << 22


class IntegrityError(ValueError):
    """A file's bytes do not match the sha256 recorded when it was written (a ValueError:
    permanent, so no retry; the next run re-writes it)."""


@dataclass(frozen=True)
class Problem:
    """One damaged or missing artifact, and what repairs it (one line for the user)."""

    file: str
    problem: str
    repair: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}; {self.repair}"


def sha256_file(path: str | Path) -> str:
    """sha256 hex of a file's bytes, read every time (no memo: a flipped bit keeps the mtime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path, names: Sequence[str]) -> dict[str, str]:
    """{name: sha256} of the named files of a folder that exist."""
    folder = Path(folder)
    return {name: sha256_file(folder / name) for name in names if (folder / name).is_file()}


# --------------------------------------------------------------------------- manifests


def _digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != MANIFEST_SHA256}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with its own sha256 added (what `write_manifest` stores)."""
    return {**manifest, MANIFEST_SHA256: _digest(manifest)}


def manifest_problem(manifest: Any) -> str | None:
    """Why a manifest read back from disk cannot be trusted, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    recorded = manifest.get(MANIFEST_SHA256)
    if recorded is None:
        return "no manifest_sha256 (written before manifests were checksummed)"
    if recorded != _digest(manifest):
        return "its content does not match its manifest_sha256 (changed or damaged after it was written)"
    return None


# --------------------------------------------------------------------------- files


def _file_problem(path: Path, expected: str | None) -> str | None:
    if expected is None:
        return "no sha256 recorded for it"
    if not path.is_file():
        return "missing"
    got = sha256_file(path)
    if got != expected:
        return f"sha256 {got[:12]}... does not match the {expected[:12]}... recorded when it was written"
    return None


def _config(cfg: Any) -> str:
    return str(getattr(cfg, "path", None) or "CONFIG")


def _rerun(config: str, what: str) -> str:
    return f"the next `textme run {config}` writes it again ({what})"


def check_file(path: str | Path, expected: str | None, *, config: str, what: str) -> Path:
    """`path` if its bytes match `expected`, else IntegrityError naming it and the repair."""
    path = Path(path)
    problem = _file_problem(path, expected)
    if problem is not None:
        raise IntegrityError(str(Problem(str(path), problem, _rerun(config, what))))
    return path


def _folder_problems(folder: Path, sums: Mapping[str, str] | None) -> list[tuple[Path, str]]:
    if not sums:
        return [(folder, "no sha256 recorded for its files")]
    return [(folder / name, p) for name, want in sorted(sums.items())
            if (p := _file_problem(folder / name, want)) is not None]


def checked_head(cfg: Any, manifest: Mapping[str, Any]) -> Path:
    """The head file of a train/released manifest, after its sha256 check."""
    stage = "released" if manifest.get("stage") == "released" else "train"
    return check_file(manifest["path"], manifest.get("sha256"), config=_config(cfg),
                      what=f"stage {stage} of encoder {manifest.get('encoder')!r}")


def checked_offset_dir(cfg: Any, folder: str | Path, sums: Mapping[str, str] | None, encoder: str | None) -> Path:
    """An offsets folder, after every file its manifest lists passed its sha256 check."""
    folder = Path(folder)
    bad = _folder_problems(folder, sums)
    if bad:
        path, problem = bad[0]
        raise IntegrityError(str(Problem(str(path), problem, _rerun(_config(cfg), f"stage offsets of encoder {encoder!r}"))))
    return folder


def checked_item_sample(cfg: Any, manifest: Mapping[str, Any]) -> Path:
    """The item sample sidecar of an embed_items manifest, after its sha256 check."""
    return check_file(manifest["items_file"], manifest.get("items_sha256"), config=_config(cfg),
                      what=f"stage embed_items of encoder {manifest.get('encoder')!r}")


# --------------------------------------------------------------------------- stage outputs


def stage_problems(cfg: Any, key: str, expected: Mapping[str, Any] | None = None,
                   captions: Sequence[Mapping[str, Any]] = ()) -> list[Problem]:
    """What is wrong with the outputs of the stage run with `key` (empty: all intact).

    Checked: its manifest file (present, its own sha256, and equal to `expected`, the
    result Prefect's record returns, when given), every file it lists, the table part it
    wrote (ingest: captions, offsets: offsets, train: training) and, for embed stages,
    that the cache still holds every key it embedded (`captions`: the ingest manifests
    an embed-texts stage read). Reads each file once; loads no model.
    """
    from tasks.common import read_manifest_file
    from tasks.workspace import Workspace

    ws = Workspace.of(cfg)
    path = ws.manifest(key)
    repair = _rerun(_config(cfg), f"stage {key.split('-', 1)[0]}")
    try:
        m = read_manifest_file(path)
    except (OSError, ValueError) as exc:
        return [Problem(str(path), "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc})",
                        repair)]
    problem = manifest_problem(m)
    if problem is None and expected is not None and expected.get(MANIFEST_SHA256) != m.get(MANIFEST_SHA256):
        problem = "differs from the result Prefect's cache record holds for it"
    if problem is not None:
        return [Problem(str(path), problem, repair)]
    out: list[Problem] = []
    stage = m.get("stage")
    if stage in ("train", "released"):
        if (p := _file_problem(Path(m["path"]), m.get("sha256"))) is not None:
            out.append(Problem(m["path"], p, repair))
        twin = m.get("uncentred_running_mean")  # a centred head's derived-uncentred running mean
        if twin and (p := _file_problem(Path(twin), m.get("uncentred_running_mean_sha256"))) is not None:
            out.append(Problem(twin, p, repair))
    for folder, sums in _offset_folders(m):
        out += [Problem(str(f), p, repair) for f, p in _folder_problems(Path(folder), sums)]
    if stage in ("embed_items", "index") and (p := _file_problem(Path(m["items_file"]), m.get("items_sha256"))) is not None:
        out.append(Problem(m["items_file"], p, repair))
    if not out:
        out += _table_problems(cfg, key, m, ws, repair)
        out += _cache_problems(cfg, m, captions, repair)
    return out


def _offset_folders(m: Mapping[str, Any]) -> list[tuple[str, Mapping[str, str] | None]]:
    stage = m.get("stage")
    if stage == "offsets":
        return [(m["dir"], m.get("sha256"))]
    if stage in ("train", "released") and m.get("offset_dir"):
        return [(m["offset_dir"], m.get("offset_sha256"))]
    return []


_TABLE_OF = {"ingest": "captions", "offsets": "offsets", "train": "training"}


def _table_problems(cfg: Any, key: str, m: Mapping[str, Any], ws: Any, repair: str) -> list[Problem]:
    from tasks.common import open_tables

    table = _TABLE_OF.get(m.get("stage"))
    if table is None:
        return []
    if table == "captions":
        part, partition = m["captions_fp"], m["dataset"]
    else:
        part, partition = key, None
    if open_tables(cfg).has_part(table, part, partition=partition):
        return []
    return [Problem(str(ws.tables / table), f"the part {part[:24]}... this stage wrote is missing or damaged",
                    repair)]


def _cache_problems(cfg: Any, m: Mapping[str, Any], captions: Sequence[Mapping[str, Any]],
                    repair: str) -> list[Problem]:
    from tasks.common import open_cache

    stage = m.get("stage")
    if stage == "embed":
        from tasks.ingest import read_snapshot

        by_fp = {c["captions_fp"]: c for c in captions}
        if any(fp not in by_fp for fp in m["captions"]):
            return []  # the caption snapshots are not known here (textme verify without them)
        wanted = [sha for fp in m["captions"] for sha in read_snapshot(cfg, by_fp[fp])[0]]
    elif stage == "embed_items":
        wanted = [k for k, _ in json.loads(Path(m["items_file"]).read_text(encoding="utf-8"))]
    else:
        return []
    where = f"{cfg.cache} namespace {m['namespace'][:16]}"
    try:
        ns = open_cache(cfg).open_namespace(m["namespace"])
    except KeyError:
        return [Problem(where, "the namespace is gone", repair)]
    missing = ns.missing(wanted)
    if missing:
        return [Problem(where, f"{len(missing)} of {len(set(wanted))} vectors stage {m['key'][:24]}... stored are "
                        "no longer in the cache", _rerun(_config(cfg), f"stage {stage}, computing only those"))]
    return []
