"""Audio benchmarks: AudioCaps and Clotho (text->audio retrieval), ESC-50 (zero-shot).

Audio files are named as found; the CLAP adapter reads PCM WAV at 48 kHz and refuses
other rates (Clotho and ESC-50 ship 44.1 kHz: resample them once, e.g. with ffmpeg).
"""

from __future__ import annotations

from pathlib import Path

from textme.data._layout import BenchmarkError, find_items, first_file, read_csv
from textme.data.registry import Benchmark, BenchmarkData, register_benchmark


def _start_forms(start: str) -> list[str]:
    """'30' and '30.0' name the same second; files use the integer form."""
    forms = [start]
    try:
        value = float(start)
    except ValueError:
        return forms
    if value.is_integer() and str(int(value)) != start:
        forms.append(str(int(value)))
    return forms


def read_audiocaps(root: Path, split: str, items_dir: Path | None) -> BenchmarkData:
    """`<split>.csv` (audiocap_id, youtube_id, start_time, caption), one caption per row;
    rows of one clip (youtube_id, start_time) are grouped in first-seen order. A clip's
    audio is `<youtube_id>_<start_time>.wav`, `<youtube_id>.wav` or `<audiocap_id>.wav`
    (any of its captions' ids), in the split's folder, `audio/<split>/`, `audio/` or root."""
    bench = "audiocaps"
    path = first_file(bench, [root / f"{split}.csv", root / "dataset" / f"{split}.csv"],
                      f"AudioCaps' {split}.csv")
    rows = read_csv(bench, path, ("audiocap_id", "youtube_id", "start_time", "caption"))
    clips: dict[tuple[str, str], dict] = {}
    for row in rows:
        clip = clips.setdefault((row["youtube_id"], row["start_time"]), {"captions": [], "ids": []})
        clip["captions"].append(row["caption"])
        clip["ids"].append(row["audiocap_id"])
    names = []
    for (ytid, start), clip in clips.items():
        names.append([f"{ytid}_{s}.wav" for s in _start_forms(start)] + [f"{ytid}.wav"]
                     + [f"{i}.wav" for i in clip["ids"]])
    files = find_items(bench, root, (split, f"audio/{split}", "audio", ""), names, "audio files")
    out = [{"item": f, "captions": c["captions"]} for f, c in zip(files, clips.values())]
    return BenchmarkData(bench, "retrieval", split, out, sources=[str(path)])


def read_clotho(root: Path, split: str, items_dir: Path | None) -> BenchmarkData:
    """`clotho_captions_<split>.csv` (file_name, caption_1 .. caption_5); audio in
    `<split>/`, `clotho_audio_<split>/`, `audio/<split>/`, `audio/` or root."""
    bench = "clotho"
    name = f"clotho_captions_{split}.csv"
    path = first_file(bench, [root / name, root / "csv_files" / name], f"Clotho's {name}")
    columns = ("file_name",) + tuple(f"caption_{i}" for i in range(1, 6))
    rows = read_csv(bench, path, columns)
    files = find_items(bench, root, (split, f"clotho_audio_{split}", f"audio/{split}", "audio", ""),
                       [[r["file_name"]] for r in rows], "audio files")
    out = [{"item": f, "captions": [r[f"caption_{i}"] for i in range(1, 6)]} for f, r in zip(files, rows)]
    return BenchmarkData(bench, "retrieval", split, out, sources=[str(path)])


_ESC_SPLITS = ("all", "fold1", "fold2", "fold3", "fold4", "fold5")


def read_esc50(root: Path, split: str, items_dir: Path | None) -> BenchmarkData:
    """`meta/esc50.csv` (filename, fold, target, category, ...) and `audio/<filename>`;
    the label is the category with `_` as a space ("dog", "chirping birds"). Split
    `all` (2000 clips) or one fold (`fold1` .. `fold5`, 400 clips each)."""
    bench = "esc50"
    path = first_file(bench, [root / "meta" / "esc50.csv", root / "esc50.csv"], "ESC-50's meta/esc50.csv")
    rows = read_csv(bench, path, ("filename", "fold", "target", "category"))
    if split != "all":
        fold = split.removeprefix("fold")
        for n, row in enumerate(rows, start=1):
            if row["fold"] not in ("1", "2", "3", "4", "5"):
                raise BenchmarkError(f"{bench}: {path} row {n}: 'fold' must be 1..5, got {row['fold']!r}")
        rows = [r for r in rows if r["fold"] == fold]
    files = find_items(bench, root, ("audio", ""), [[r["filename"]] for r in rows], "audio files")
    out = [{"item": f, "label": r["category"].replace("_", " ")} for f, r in zip(files, rows)]
    return BenchmarkData(bench, "classification", split, out, sources=[str(path)])


register_benchmark(Benchmark(
    name="audiocaps", task="retrieval", reader=read_audiocaps, splits=("test", "val", "train"),
    description="AudioCaps text->audio retrieval (test: 975 clips x 5 captions, grouped per clip)",
    download="test.csv from github.com/cdjkim/audiocaps (dataset/); audio clips from YouTube, as WAV",
))
register_benchmark(Benchmark(
    name="clotho", task="retrieval", reader=read_clotho, splits=("evaluation", "validation", "development"),
    description="Clotho v2 text->audio retrieval (evaluation: 1045 clips x 5 captions)",
    download="zenodo.org/records/4783391: clotho_captions_evaluation.csv + clotho_audio_evaluation.7z",
))
register_benchmark(Benchmark(
    name="esc50", task="classification", reader=read_esc50, splits=_ESC_SPLITS,
    description="ESC-50 zero-shot audio classification (2000 clips, 50 classes; or one fold)",
    download="github.com/karolpiczak/ESC-50 (meta/esc50.csv, audio/)",
))
