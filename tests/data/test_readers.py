"""Benchmark readers on fixture files in the distributed layouts: the rows they make,
and the one-line refusal of a broken layout."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from textme.data import BenchmarkError, TASKS, get_benchmark, list_benchmarks, parse_rows, read_benchmark
from tests.data import layouts

READERS = ("audiocaps", "clotho", "coco", "esc50", "flickr30k", "mixbench", "modelnet40", "msrvtt", "msvd",
           "rsna", "scanobjectnn")


def read(name: str, root: Path, split: str | None = None, **kw):
    data = read_benchmark(name, root, split, **kw)
    # every reader's rows are valid manifest rows of its task
    parse_rows(data.rows, data.task, base=root, source=name)
    return data


def test_every_reader_is_registered_with_a_description():
    benches = list_benchmarks()
    assert [b.name for b in benches] == sorted(READERS)
    for b in benches:
        assert b.task in TASKS and b.description and "\n" not in b.description and b.splits and b.download
    with pytest.raises(BenchmarkError, match="unknown benchmark 'imagenet'; known: audiocaps, clotho"):
        get_benchmark("imagenet")


# --------------------------------------------------------------------------- rows


def test_flickr30k_test_split_groups_five_captions(tmp_path):
    layouts.flickr30k(tmp_path)
    data = read("flickr30k", tmp_path)
    assert (data.task, data.split, len(data.rows)) == ("retrieval", "test", 2)
    assert [Path(r["item"]).name for r in data.rows] == ["1000.jpg", "1002.jpg"]
    assert data.rows[0]["captions"] == [f"a dog runs {i}" for i in range(5)]  # stripped
    assert Path(data.rows[0]["item"]).parent.name == "flickr30k-images"
    assert [Path(r["item"]).name for r in read("flickr30k", tmp_path, "val").rows] == ["1003.jpg"]


def test_coco_keeps_five_of_seven_and_train_takes_restval(tmp_path):
    layouts.coco(tmp_path)
    data = read("coco", tmp_path)
    assert [len(r["captions"]) for r in data.rows] == [5, 5]
    assert data.rows[0]["item"].endswith("val2014/COCO_val2014_1.jpg")
    assert len(read("coco", tmp_path, captions=0).rows[0]["captions"]) == 7
    train = read("coco", tmp_path, "train")
    assert sorted(Path(r["item"]).name for r in train.rows) == ["COCO_train2014_3.jpg", "COCO_val2014_2.jpg"]


def test_audiocaps_groups_captions_per_clip_and_finds_three_name_patterns(tmp_path):
    want = layouts.audiocaps(tmp_path)
    data = read("audiocaps", tmp_path)
    assert [r["captions"] for r in data.rows] == want["captions"]
    assert [Path(r["item"]).name for r in data.rows] == want["files"]


def test_clotho_five_captions_per_file(tmp_path):
    layouts.clotho(tmp_path)
    data = read("clotho", tmp_path)
    assert [Path(r["item"]).name for r in data.rows] == ["a b.wav", "c.wav"]
    assert data.rows[1]["captions"] == [f"birds sing {i}" for i in range(5)]


def test_msvd_joins_tokens_per_video_of_the_split(tmp_path):
    layouts.msvd(tmp_path)
    data = read("msvd", tmp_path)
    assert [Path(r["item"]).name for r in data.rows] == ["vidA_1_5.avi", "vidB_3_9.avi"]
    assert data.rows[0]["captions"] == ["a man cooks", "someone is cooking"]
    assert [Path(r["item"]).name for r in read("msvd", tmp_path, "train").rows] == ["vidC_0_4.avi"]


def test_msrvtt_one_caption_per_video(tmp_path):
    layouts.msrvtt(tmp_path)
    data = read("msrvtt", tmp_path)
    assert [(Path(r["item"]).name, r["captions"]) for r in data.rows] == [
        ("video7020.mp4", ["a woman sings"]), ("video7021.mp4", ["a man runs"])]


def test_esc50_labels_with_spaces_and_folds(tmp_path):
    layouts.esc50(tmp_path)
    data = read("esc50", tmp_path)
    assert (data.task, data.split) == ("classification", "all")
    assert [r["label"] for r in data.rows] == ["dog", "chirping birds", "dog", "rain"]
    fold1 = read("esc50", tmp_path, "fold1")
    assert [Path(r["item"]).name for r in fold1.rows] == ["1-100-A-0.wav", "1-101-A-14.wav"]


def test_modelnet40_materialises_xyz_npy_once(tmp_path):
    want = layouts.modelnet40(tmp_path / "mn")
    items = tmp_path / "items"
    data = read("modelnet40", tmp_path / "mn", items_dir=items)
    assert [r["label"] for r in data.rows] == ["airplane", "night_stand"]
    first = Path(data.rows[1]["item"])
    assert first == items / "modelnet40" / "night_stand" / "night_stand_0201.npy"
    np.testing.assert_allclose(np.load(first), want["clouds"]["night_stand_0201"], atol=1e-6)
    stamp = first.stat().st_mtime_ns
    read("modelnet40", tmp_path / "mn", items_dir=items)
    assert first.stat().st_mtime_ns == stamp  # a rerun rewrites nothing
    from textme.encoders.inputs import load_point_cloud

    assert load_point_cloud(str(first)).shape == (8, 3)  # what point encoders read


def test_scanobjectnn_h5_to_npy_with_the_15_class_names(tmp_path):
    want = layouts.scanobjectnn(tmp_path / "sonn")
    data = read("scanobjectnn", tmp_path / "sonn", items_dir=tmp_path / "items")
    assert data.split == "obj_only"
    assert [r["label"] for r in data.rows] == ["bag", "toilet", "chair", "chair", "table"]
    for i, row in enumerate(data.rows):
        np.testing.assert_array_equal(np.load(row["item"]), want["data"][i])
    # the h5 file itself is a root too; the folder is named by the file's content
    again = read("scanobjectnn", want["path"], items_dir=tmp_path / "items")
    assert [r["item"] for r in again.rows] == [r["item"] for r in data.rows]


def test_rsna_one_row_per_patient(tmp_path):
    layouts.rsna(tmp_path)
    data = read("rsna", tmp_path)
    assert [(Path(r["item"]).name, r["label"]) for r in data.rows] == [
        ("p1.dcm", "normal"), ("p2.dcm", "pneumonia"), ("p3.dcm", "normal")]
    (tmp_path / "test_ids.txt").write_text("p3\np2\n")
    kept = read("rsna", tmp_path, ids="test_ids.txt", positive="lung opacity")
    assert [(Path(r["item"]).stem, r["label"]) for r in kept.rows] == [("p3", "normal"), ("p2", "lung opacity")]


def _gr_clip_modes(n: int, seed: int) -> list[str]:
    """retrieval_mixbench.py's assignment, as its script writes it."""
    random.seed(seed)
    perm = random.sample(range(n), n)
    modes = [None] * n
    for i in range(n):
        modes[perm[i]] = ["text", "image", "mixed"][i % 3]
    return modes


def test_mixbench_assigns_thirds_exactly_as_gr_clip(tmp_path):
    want = layouts.mixbench(tmp_path)
    data = read("mixbench", tmp_path)
    docs = [r for r in data.rows if r["kind"] == "doc"]
    queries = [r for r in data.rows if r["kind"] == "query"]
    assert [d["doc_id"] for d in docs] == [str(i) for i in range(8)]  # the text-only document is left out
    for d, mode in zip(docs, _gr_clip_modes(8, 42)):
        assert (d["text"] is not None, d["item"] is not None) == {
            "text": (True, False), "image": (False, True), "mixed": (True, True)}[mode]
        if d["item"]:
            assert Path(d["item"]) == want["subset"] / "images" / f"img_{d['doc_id']}.jpg"
    assert [q["query"] for q in queries] == ["topic 0", "topic 1", "topic 2"]
    assert queries[2]["relevance"] == {"2": 2}  # the judgment of the left-out document is dropped
    assert any("without image" in n for n in data.notes)
    other = read("mixbench", tmp_path, seed=7)
    assert [(d["text"] is None, d["item"] is None) for d in other.rows[:8]] != \
        [(d["text"] is None, d["item"] is None) for d in docs]
    assert read("mixbench", want["subset"]).rows == data.rows  # a subset's own folder is a root too
    released = read("mixbench", tmp_path, corpus="mixed_corpus")
    assert [(d["text"] is None, d["item"] is None) for d in released.rows if d["kind"] == "doc"] == [
        (False, True), (True, False), (False, False)]


# --------------------------------------------------------------------------- refusals


def _break_json_sentence(root: Path) -> None:
    path = root / "dataset_flickr30k.json"
    doc = json.loads(path.read_text())
    del doc["images"][2]["sentences"][3]["raw"]
    path.write_text(json.dumps(doc))


def _remove(*rel: str):
    def go(root: Path) -> None:
        for r in rel:
            (root / r).unlink()
    return go


def _rewrite(rel: str, old: str, new: str):
    def go(root: Path) -> None:
        path = root / rel
        path.write_text(path.read_text().replace(old, new))
    return go


def _pickle_with_a_class(root: Path) -> None:
    (root / "raw-captions.pkl").write_bytes(pickle.dumps({"vidA_1_5": [["a"]], "x": Path("/etc")}))


def _pickle_with_a_tuple(root: Path) -> None:
    (root / "raw-captions.pkl").write_bytes(pickle.dumps({"vidA_1_5": [("a", "man")], "vidB_3_9": [["b"]]}))


def _h5_without_label(root: Path) -> None:
    import h5py

    with h5py.File(root / "h5_files" / "main_split_nobg" / "test_objectdataset.h5", "a") as h5:
        del h5["label"]


BROKEN = [
    ("flickr30k", _break_json_sentence, r"dataset_flickr30k.json images\[2\].sentences\[3\]: no field 'raw'"),
    ("flickr30k", _remove("dataset_flickr30k.json"), r"dataset_flickr30k.json or .* not found \(expected Karpathy"),
    ("coco", _remove("val2014/COCO_val2014_1.jpg", "val2014/COCO_val2014_4.jpg"),
     r"coco: 2 of 2 image files not found \(looked in .*\): val2014/COCO_val2014_1.jpg, val2014/COCO_val2014_4.jpg"),
    ("coco", _rewrite("dataset_coco.json", '"split"', '"set"'), r"dataset_coco.json images\[0\]: no field 'split'"),
    ("audiocaps", _rewrite("test.csv", "caption\n", "text\n"),
     r"test.csv: no column 'caption' \(found: audiocap_id, youtube_id, start_time, text\)"),
    ("audiocaps", _remove("test/107.wav"), r"1 of 3 audio files not found .*: yt_CCC_10.wav$"),
    ("clotho", _rewrite("clotho_captions_evaluation.csv", "caption_5", "caption5"),
     r"clotho_captions_evaluation.csv: no column 'caption_5'"),
    ("msvd", _pickle_with_a_class, r"raw-captions.pkl: refused to load pathlib.*only dicts, lists and strings"),
    ("msvd", _pickle_with_a_tuple, r"raw-captions.pkl: caption 0 of 'vidA_1_5' must be a list of strings, got tuple"),
    ("msvd", _rewrite("test_list.txt", "vidB_3_9", "vidZ"), r"no captions for 1 of 2 videos of test_list.txt: vidZ"),
    ("msrvtt", _rewrite("MSRVTT_JSFUSION_test.csv", "sentence", "caption"),
     r"MSRVTT_JSFUSION_test.csv: no column 'sentence'"),
    ("esc50", _rewrite("meta/esc50.csv", "category", "class"), r"meta/esc50.csv: no column 'category'"),
    ("modelnet40", _rewrite("modelnet40_test.txt", "airplane_0627", "plane_0627"),
     r"modelnet40_test.txt line 1: 'plane_0627' is not <class>_<nnnn> of a class in modelnet40_shape_names.txt"),
    ("modelnet40", _rewrite("airplane/airplane_0627.txt", ",", ";"),
     r"airplane_0627.txt: expected comma-separated x,y,z\[,nx,ny,nz\] rows"),
    ("scanobjectnn", _h5_without_label, r"test_objectdataset.h5: no dataset 'label' \(found: data\)"),
    ("rsna", _rewrite("stage_2_train_labels.csv", "p3,,,,,0", "p3,,,,,2"),
     r"stage_2_train_labels.csv row 4: 'Target' must be 0 or 1, got '2'"),
    ("rsna", _remove("stage_2_train_images/p1.dcm", "stage_2_train_images/p3.dcm"),
     r"2 of 3 DICOM files not found .*: p1.dcm, p3.dcm"),
    ("mixbench", _rewrite("MSCOCO/qrels/qrels.tsv", "score", "grade"), r"qrels.tsv: no column 'score'"),
    ("mixbench", _remove("MSCOCO/images/img_3.jpg"),
     r"1 image files of corpus.jsonl not found under .*images: img_3.jpg \(missing_images='drop'"),
]


@pytest.mark.parametrize("name, damage, message", BROKEN, ids=[f"{b[0]}-{i}" for i, b in enumerate(BROKEN)])
def test_broken_layout_is_one_line_naming_the_file_and_field(tmp_path, name, damage, message):
    getattr(layouts, name)(tmp_path)
    damage(tmp_path)
    with pytest.raises(BenchmarkError, match=message) as info:
        read_benchmark(name, tmp_path, items_dir=tmp_path / "items")
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{name}: ")


def test_unknown_split_and_option_list_the_known(tmp_path):
    layouts.esc50(tmp_path)
    with pytest.raises(BenchmarkError, match="esc50: unknown split 'fold9'; known: all, fold1"):
        read_benchmark("esc50", tmp_path, "fold9")
    with pytest.raises(BenchmarkError, match="esc50: unknown option 'seed'; known: none"):
        read_benchmark("esc50", tmp_path, seed=1)
    with pytest.raises(BenchmarkError, match="modelnet40: needs a folder to write its point clouds into"):
        layouts.modelnet40(tmp_path / "mn")
        read_benchmark("modelnet40", tmp_path / "mn")


def test_mixbench_drop_leaves_out_documents_without_images_as_gr_clip(tmp_path):
    layouts.mixbench(tmp_path)
    (tmp_path / "MSCOCO" / "images" / "img_3.jpg").unlink()
    data = read("mixbench", tmp_path, missing_images="drop")
    docs = [r for r in data.rows if r["kind"] == "doc"]
    assert [d["doc_id"] for d in docs] == ["0", "1", "2", "4", "5", "6", "7"]
    for d, mode in zip(docs, _gr_clip_modes(7, 42)):  # the assignment runs over what is left
        assert (d["item"] is None) == (mode == "text") and (d["text"] is None) == (mode == "image")
    assert [q["relevance"] for q in data.rows if q["kind"] == "query"][0] == {"0": 1}
