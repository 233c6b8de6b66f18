"""Where everything of one config lives under its workdir.

One place that knows the layout, so tasks, flows and the CLI agree on it:

    <workdir>/
      cache/                embedding cache (unless `cache:` names another URL)
      tables/               Parquet tables (storage.tables.TableStore)
      catalog.duckdb        DuckDB catalog, a checked copy of every table (storage.catalog)
      configs/<fp>.json     resolved config snapshots (what tasks load; stored with results)
      manifests/<key>.json  each stage's output manifest, named by its cache key
      offsets/<fp>/         mu_text / mu_modal (textme.offsets.save_offset)
      projections/<fp>.pt   trained heads (textme.save_projection)
      prefect/results/      Prefect's persisted task results and cache records
      refresh/<fp>.json     caption source fingerprints seen by the last refresh of the
                            config with fingerprint <fp> (tasks/refresh_check.py)
      refresh/<fp>.checked.json  the last check of them that found nothing changed
      reports/<run>/        the run report: PNG plots + index.html (tasks/report/)
      demo/                 embedded demo assets (demo.assets.prepare_demo)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

__all__ = ["Workspace", "atomic_write_text", "atomic_write_bytes", "read_json", "TEMP_GRACE_S"]

#: A temporary file of `atomic_write_text` older than this is a killed writer's leftover
#: (a live writer holds one for the milliseconds of a write and an fsync).
TEMP_GRACE_S = 600.0


@dataclass(frozen=True)
class Workspace:
    root: Path
    cache_url: str

    @classmethod
    def of(cls, cfg: Any) -> "Workspace":
        """The workspace of a `PipelineConfig`."""
        return cls(Path(cfg.workdir), cfg.cache)

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def prefect_results(self) -> Path:
        return self.root / "prefect" / "results"

    def refresh_state(self, config_fp: str) -> Path:
        """What the last successful refresh of one config (by content) saw of its sources."""
        return self.root / "refresh" / f"{config_fp}.json"

    def refresh_checked(self, config_fp: str) -> Path:
        """When a refresh of that config last found no source changed (and ran nothing)."""
        return self.root / "refresh" / f"{config_fp}.checked.json"

    @property
    def demo(self) -> Path:
        return self.root / "demo"

    def config_snapshot(self, config_fp: str) -> Path:
        return self.configs / f"{config_fp}.json"

    def manifest(self, key: str) -> Path:
        return self.manifests / f"{key}.json"

    def stage_manifests(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(path, manifest) of every readable stage manifest (item sidecars skipped)."""
        if not self.manifests.is_dir():
            return
        for path in self.manifests.glob("*.json"):
            if path.name.endswith(".items.json"):
                continue
            try:
                yield path, read_json(path)
            except ValueError:  # half-written by a killed writer of an older version
                continue

    def remove_stale_temp_files(self, grace_s: float = TEMP_GRACE_S) -> list[Path]:
        """Delete the `.<name>.<random>.tmp` files `atomic_write_text` left behind when
        its process was killed mid-write, in the folders it writes to; files younger
        than `grace_s` may belong to a writer still at work and are kept."""
        cutoff = time.time() - grace_s
        removed = []
        for folder in (self.manifests, self.configs, self.root / "refresh"):
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path)
                except FileNotFoundError:  # finished (renamed) or removed meanwhile
                    continue
        return removed

    def offset_dir(self, fp: str) -> Path:
        return self.root / "offsets" / fp

    def projection(self, fp: str) -> Path:
        return self.root / "projections" / f"{fp}.pt"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def report_dir(self, run_id: str) -> Path:
        return self.reports / run_id


def atomic_write_text(path: Path, text: str) -> None:
    """Write-then-rename, so readers see the old file or the whole new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write_text` for bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
