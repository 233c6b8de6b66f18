"""Video benchmarks: MSVD (CLIP4Clip layout) and MSR-VTT 1k-A (text->video retrieval)."""

from __future__ import annotations

from pathlib import Path

from textme.data._layout import BenchmarkError, find_items, first_file, load_plain_pickle, read_csv, read_text
from textme.data.registry import Benchmark, BenchmarkData, register_benchmark


def _token_captions(bench: str, path: Path, video: str, value: object) -> list[str]:
    """One video's captions from raw-captions.pkl: a list of token lists (CLIP4Clip
    joins the tokens with spaces); anything else is refused naming the video."""
    if not isinstance(value, list) or not value:
        raise BenchmarkError(f"{bench}: {path}: captions of {video!r} must be a non-empty list of token "
                             f"lists, got {type(value).__name__}")
    out = []
    for j, tokens in enumerate(value):
        if isinstance(tokens, str):
            text = tokens
        elif isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
            text = " ".join(tokens)
        else:
            raise BenchmarkError(f"{bench}: {path}: caption {j} of {video!r} must be a list of strings, "
                                 f"got {type(tokens).__name__}")
        if text.strip():
            out.append(text.strip())
    if not out:
        raise BenchmarkError(f"{bench}: {path}: every caption of {video!r} is empty")
    return out


def read_msvd(root: Path, split: str, items_dir: Path | None) -> BenchmarkData:
    """CLIP4Clip's MSVD layout: `<split>_list.txt` (one video id per line),
    `raw-captions.pkl` ({video id: [[token, ...], ...]}, read with an unpickler that
    builds only plain data), videos `<id>.avi` in `YouTubeClips/`, `videos/` or root."""
    bench = "msvd"
    ids_path = first_file(bench, [root / f"{split}_list.txt", root / "msvd_data" / f"{split}_list.txt"],
                          f"MSVD's {split}_list.txt (video ids)")
    caps_path = first_file(bench, [ids_path.parent / "raw-captions.pkl"], "MSVD's raw-captions.pkl")
    ids = [line.strip() for line in read_text(bench, ids_path).splitlines() if line.strip()]
    if not ids:
        raise BenchmarkError(f"{bench}: {ids_path}: no video ids")
    captions = load_plain_pickle(bench, caps_path)
    if not isinstance(captions, dict) or not all(isinstance(k, str) for k in captions):
        raise BenchmarkError(f"{bench}: {caps_path}: expected a dict of video id -> token lists, "
                             f"got {type(captions).__name__}")
    absent = [v for v in ids if v not in captions]
    if absent:
        raise BenchmarkError(f"{bench}: {caps_path}: no captions for {len(absent)} of {len(ids)} videos of "
                             f"{ids_path.name}: {', '.join(absent[:5])}")
    files = find_items(bench, root, ("YouTubeClips", "videos", ""), [[f"{v}.avi"] for v in ids], "video files")
    rows = [{"item": f, "captions": _token_captions(bench, caps_path, v, captions[v])} for f, v in zip(files, ids)]
    return BenchmarkData(bench, "retrieval", split, rows, sources=[str(ids_path), str(caps_path)])


def read_msrvtt(root: Path, split: str, items_dir: Path | None) -> BenchmarkData:
    """The 1k-A test set: `MSRVTT_JSFUSION_test.csv` (key, vid_key, video_id, sentence),
    one caption per video; videos `<video_id>.mp4` in `MSRVTT_Videos/`, `videos/all/`,
    `videos/` or root."""
    bench = "msrvtt"
    path = first_file(bench, [root / "MSRVTT_JSFUSION_test.csv", root / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv"],
                      "the 1k-A MSRVTT_JSFUSION_test.csv")
    rows = read_csv(bench, path, ("key", "vid_key", "video_id", "sentence"))
    files = find_items(bench, root, ("MSRVTT_Videos", "videos/all", "videos", ""),
                       [[f"{r['video_id']}.mp4"] for r in rows], "video files")
    out = [{"item": f, "captions": [r["sentence"]]} for f, r in zip(files, rows)]
    return BenchmarkData(bench, "retrieval", split, out, sources=[str(path)])


register_benchmark(Benchmark(
    name="msvd", task="retrieval", reader=read_msvd, splits=("test", "val", "train"),
    description="MSVD text->video retrieval, CLIP4Clip layout (test: 670 videos, ~40 captions each)",
    download="CLIP4Clip's msvd_data.zip (raw-captions.pkl, *_list.txt) + YouTubeClips.tar (videos)",
))
register_benchmark(Benchmark(
    name="msrvtt", task="retrieval", reader=read_msrvtt, splits=("test",),
    description="MSR-VTT 1k-A text->video retrieval (1000 videos, one caption each)",
    download="CLIP4Clip's msrvtt_data.zip (MSRVTT_JSFUSION_test.csv) + MSRVTT videos (all/*.mp4)",
))
