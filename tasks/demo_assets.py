"""The embedded demo's assets, built before anything else runs (`demo: true` configs).

`demo.assets.prepare_demo` is idempotent and fast once built (it checks a READY marker),
so this task is not cached: it simply runs every time.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

__all__ = ["prepare_demo_assets"]


@task(name="prepare-demo", cache_policy=NO_CACHE, persist_result=False)
def prepare_demo_assets(workdir: str) -> dict[str, Any]:
    """Build `<workdir>/demo` (tiny models, generated items, eval manifests) if needed."""
    from demo.assets import prepare_demo

    paths = prepare_demo(workdir)
    return {"root": str(paths.get("root", "")), "version": paths.get("version")}
