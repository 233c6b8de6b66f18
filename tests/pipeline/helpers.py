"""Mini configs for the pipeline tests: toy encoders only, few captions, few epochs.

Modal items and evaluation manifests come from the demo's generated assets (built once
per session); captions are the first lines of the demo's caption files, copied into the
test's folder so a test can edit them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tasks.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
CAPTIONS = REPO / "demo" / "data"
MODALITIES = ("image", "audio", "point")
K_EDITED = 3  # captions edited between the warm and the incremental run


def _subset_manifest(src: Path, dst: Path, keep) -> None:
    """Copy a demo eval manifest, item paths made absolute, rows filtered by keep(i, row)."""
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    out = []
    for i, row in enumerate(rows):
        if not keep(i, row):
            continue
        for key in ("item", "source_item", "target_item"):
            if row.get(key):
                row[key] = str(src.parent / row[key])
        out.append(json.dumps(row))
    dst.write_text("\n".join(out) + "\n")


def write_mini_config(folder: Path, assets: Path, *, n_captions: int = 120, epochs: int = 3,
                      n_eval: int = 30, name: str = "mini", encoder_kind: str = "toy") -> Path:
    """A complete small config in `folder` (workdir `folder/work`); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    for m in MODALITIES:
        lines = (CAPTIONS / f"scenes_{m}.jsonl").read_text().splitlines()[:n_captions]
        (data / f"scenes_{m}.jsonl").write_text("\n".join(lines) + "\n")
    ev = folder / "eval"
    ev.mkdir(exist_ok=True)
    src = assets / "eval"
    _subset_manifest(src / "image_retrieval.jsonl", ev / "image_retrieval.jsonl", lambda i, r: i < n_eval)
    _subset_manifest(src / "point_classification.jsonl", ev / "point_classification.jsonl",
                     lambda i, r: i < 2 * n_eval)
    _subset_manifest(src / "audio_to_image.jsonl", ev / "audio_to_image.jsonl", lambda i, r: i < n_eval)
    queries = iter(range(10**6))
    _subset_manifest(src / "mixed_search.jsonl", ev / "mixed_search.jsonl",
                     lambda i, r: r["kind"] == "doc" or next(queries) < 10)
    encoders = {
        f"toy_{m}": {
            "encoder": encoder_kind,
            "options": {"modality": m, "tower_seed": seed, "dim": dim, "gap_norm": 2.5, "noise": 0.4},
            "train_on": [f"scenes_{m}"],
        }
        for m, seed, dim in (("image", 1, 32), ("audio", 2, 24), ("point", 3, 24))
    }
    config = {
        "name": name,
        "workdir": "work",
        "demo": False,
        "pivot": {"encoder": "toy-pivot", "options": {"dim": 32}},
        "encoders": encoders,
        "datasets": {
            f"scenes_{m}": {"source": f"data/scenes_{m}.jsonl", "text_column": "caption",
                            "id_column": "caption_id", "modality": m, "items": str(assets / "items" / m)}
            for m in MODALITIES
        },
        "offsets": {"n_samples": 60, "seed": 0},
        "training": {"epochs": epochs, "batch_size": 64, "ablate_centring": True},
        "evaluation": [
            {"name": "image_retrieval", "task": "retrieval", "encoder": "toy_image",
             "manifest": "eval/image_retrieval.jsonl"},
            {"name": "point_classification", "task": "classification", "encoder": "toy_point",
             "manifest": "eval/point_classification.jsonl", "templates": ["a point cloud of a {}."]},
            {"name": "audio_to_image", "task": "emergent", "source": "toy_audio", "target": "toy_image",
             "manifest": "eval/audio_to_image.jsonl"},
            {"name": "mixed_search", "task": "mixed_search", "encoder": "toy_image",
             "manifest": "eval/mixed_search.jsonl", "k": 10},
        ],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def copy_assets(assets: Path, workdir: Path) -> None:
    """Pre-populate `<workdir>/demo` with already built demo assets (saves the build)."""
    shutil.copytree(assets, workdir / "demo")


def run_pipeline(config: Path) -> str:
    """Run the flow in-process; its flow run id."""
    from flows.pipeline import pipeline

    state = pipeline(str(config), return_state=True)
    assert state.is_completed(), state
    return str(state.state_details.flow_run_id)


def rows(cfg, table: str, run_id: str) -> list[dict]:
    from storage.tables import TableStore

    return TableStore(Workspace.of(cfg).tables).read(table, filters={"run_id": run_id}).to_pylist()


class EncodeCounter:
    """Counts toy encoder forward passes (inputs encoded), per tower."""

    def __init__(self, monkeypatch):
        import demo.encoders

        self.calls: dict[str, int] = {}
        original = demo.encoders._ToyBase._encode

        def counting(enc, tower, items, **kw):
            self.calls[tower] = self.calls.get(tower, 0) + len(items)
            return original(enc, tower, items, **kw)

        monkeypatch.setattr(demo.encoders._ToyBase, "_encode", counting)

    def total(self) -> int:
        return sum(self.calls.values())


N_ITEMS = 24  # items of a one_encoder_config's own items folder


def one_encoder_config(tmp_path: Path, assets: Path, modality: str = "image", *, evaluation: bool = True,
                       **dataset_options) -> Path:
    """A mini config in `tmp_path/cfg` with one toy encoder, one retrieval evaluation
    (image only, unless `evaluation=False`) and an items folder of its own (N_ITEMS
    files, all sampled) that a test may damage."""
    config = write_mini_config(tmp_path / "cfg", assets, epochs=2, n_eval=10, name=f"one-{modality}")
    data = yaml.safe_load(config.read_text())
    enc, ds = f"toy_{modality}", f"scenes_{modality}"
    data["encoders"] = {enc: data["encoders"][enc]}
    data["datasets"] = {ds: {**data["datasets"][ds], **dataset_options}}
    items = config.parent / "items"
    items.mkdir()
    for path in sorted((assets / "items" / modality).iterdir())[:N_ITEMS]:
        shutil.copy(path, items / path.name)
    data["datasets"][ds]["items"] = str(items)
    data["offsets"]["n_samples"] = 5000
    data["training"]["ablate_centring"] = False
    if modality == "image" and evaluation:
        data["evaluation"] = [e for e in data["evaluation"] if e["name"] == "image_retrieval"]
    else:
        data["evaluation"] = []
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config
