"""(Re)generate the demo's shipped caption files, deterministically, from the toy world.

    python -m demo.make_captions            # rewrite demo/data/scenes_<modality>.jsonl
    python -m demo.make_captions --check    # exit 1 if the shipped files differ

The files are checked in so the demo needs nothing but the repository; this script is
how they were made, and a test keeps the two in step. Captions describe training scenes
only: the world's held-out evaluation scenes never appear in them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from demo.world import MODALITIES, World

DATA_DIR = Path(__file__).resolve().parent / "data"
CAPTIONS_PER_MODALITY = 1500
ID_PREFIX = {"image": "img", "audio": "aud", "point": "pts"}


def caption_file(modality: str, data_dir: Path = DATA_DIR) -> Path:
    return data_dir / f"scenes_{modality}.jsonl"


def render_captions(modality: str, n: int = CAPTIONS_PER_MODALITY, world: World | None = None) -> str:
    """The JSONL text of one modality's caption file (columns caption_id, caption)."""
    world = world or World()
    rows = (json.dumps({"caption_id": f"{ID_PREFIX[modality]}-{i:05d}", "caption": caption})
            for i, (_, caption) in enumerate(world.train_captions(modality, n)))
    return "".join(row + "\n" for row in rows)


def write_captions(data_dir: Path = DATA_DIR) -> list[Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for modality in MODALITIES:
        path = caption_file(modality, data_dir)
        path.write_text(render_captions(modality), encoding="utf-8")
        paths.append(path)
    return paths


def stale_files(data_dir: Path = DATA_DIR) -> list[Path]:
    """Shipped files whose content differs from what the generator makes now."""
    return [caption_file(m, data_dir) for m in MODALITIES
            if not caption_file(m, data_dir).is_file()
            or caption_file(m, data_dir).read_text(encoding="utf-8") != render_captions(m)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"{path}: differs from `python -m demo.make_captions` output", file=sys.stderr)
        return 1 if stale else 0
    for path in write_captions():
        print(f"wrote {path} ({sum(1 for _ in path.open(encoding='utf-8'))} captions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
