"""Chest X-ray zero-shot classification: RSNA Pneumonia Detection."""

from __future__ import annotations

from pathlib import Path

from textme.data._layout import BenchmarkError, find_items, first_file, read_csv, read_text
from textme.data.registry import Benchmark, BenchmarkData, register_benchmark


def read_rsna(root: Path, split: str, items_dir: Path | None, *, negative: str = "normal",
              positive: str = "pneumonia", ids: str | None = None) -> BenchmarkData:
    """`stage_2_train_labels.csv` (patientId, x, y, width, height, Target): one row per
    box, so a patient may appear several times; one manifest row per patient, labelled
    from Target (0 -> `negative`, 1 -> `positive`). DICOMs `<patientId>.dcm` in
    `stage_2_train_images/` or root. `ids`: a file of the patient ids to keep (one per
    line, or a CSV with a patientId column; relative to root or the working folder), e.g.
    a published test split."""
    bench = "rsna"
    path = first_file(bench, [root / "stage_2_train_labels.csv"], "RSNA's stage_2_train_labels.csv")
    rows = read_csv(bench, path, ("patientId", "Target"))
    target: dict[str, str] = {}
    for n, row in enumerate(rows, start=1):
        value = row["Target"]
        if value not in ("0", "1"):
            raise BenchmarkError(f"{bench}: {path} row {n}: 'Target' must be 0 or 1, got {value!r}")
        pid = row["patientId"]
        if target.setdefault(pid, value) != value:
            raise BenchmarkError(f"{bench}: {path} row {n}: patient {pid!r} has both Target 0 and 1")
    sources = [str(path)]
    patients = list(target)
    if ids is not None:
        given = Path(ids).expanduser()
        keep_path = first_file(bench, [given] if given.is_absolute() else [root / given, given],
                               "a list of patient ids")
        sources.append(str(keep_path))
        text = read_text(bench, keep_path)
        first = text.splitlines()[0].strip() if text.strip() else ""
        keep = ([r["patientId"] for r in read_csv(bench, keep_path, ("patientId",))] if "patientId" in first
                else [line.strip() for line in text.splitlines() if line.strip()])
        unknown = [p for p in keep if p not in target]
        if unknown:
            raise BenchmarkError(f"{bench}: {keep_path}: {len(unknown)} patient ids are not in {path.name}: "
                                 f"{', '.join(unknown[:5])}")
        patients = list(dict.fromkeys(keep))
    if not negative.strip() or not positive.strip() or negative == positive:
        raise BenchmarkError(f"{bench}: options negative and positive must be two different names")
    files = find_items(bench, root, ("stage_2_train_images", ""), [[f"{p}.dcm"] for p in patients], "DICOM files")
    names = {"0": negative, "1": positive}
    out = [{"item": f, "label": names[target[p]]} for f, p in zip(files, patients)]
    return BenchmarkData(bench, "classification", split, out, sources=sources)


register_benchmark(Benchmark(
    name="rsna", task="classification", reader=read_rsna, splits=("train",),
    options={"negative": "label for Target 0 (default 'normal')", "positive": "label for Target 1 (default "
             "'pneumonia')", "ids": "file of patient ids to keep (e.g. a published test split)"},
    description="RSNA Pneumonia zero-shot X-ray classification (one row per patient, label from Target)",
    download="kaggle.com/c/rsna-pneumonia-detection-challenge (stage_2_train_labels.csv, stage_2_train_images/)",
))
