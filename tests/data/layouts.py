"""Small benchmarks written in exactly the layouts people download (no downloads).

Each builder writes one benchmark under `root` and returns what the test should find.
Item files hold a few distinct bytes: the readers never decode images, audio or video.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np


def _touch(path: Path, content: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((content or path.name).encode())
    return path


def _csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def flickr30k(root: Path) -> dict:
    images = [
        {"filename": "1000.jpg", "split": "test", "sentences": [{"raw": f"a dog runs {i} "} for i in range(5)]},
        {"filename": "1001.jpg", "split": "train", "sentences": [{"raw": "a cat"}]},
        {"filename": "1002.jpg", "split": "test", "sentences": [{"raw": f"two men talk {i}"} for i in range(5)]},
        {"filename": "1003.jpg", "split": "val", "sentences": [{"raw": "a bird"}]},
    ]
    for im in images:
        _touch(root / "flickr30k-images" / im["filename"])
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return {"test_items": ["1000.jpg", "1002.jpg"]}


def coco(root: Path) -> dict:
    images = [
        {"filepath": "val2014", "filename": "COCO_val2014_1.jpg", "split": "test",
         "sentences": [{"raw": f"a plate of food {i}"} for i in range(7)]},
        {"filepath": "val2014", "filename": "COCO_val2014_2.jpg", "split": "restval",
         "sentences": [{"raw": "a bus"}]},
        {"filepath": "train2014", "filename": "COCO_train2014_3.jpg", "split": "train",
         "sentences": [{"raw": "a kite"}]},
        {"filepath": "val2014", "filename": "COCO_val2014_4.jpg", "split": "test",
         "sentences": [{"raw": f"a red car {i}"} for i in range(5)]},
    ]
    for im in images:
        _touch(root / im["filepath"] / im["filename"])
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))
    return {}


def audiocaps(root: Path) -> dict:
    rows = [  # captions of a clip are not adjacent in the real file either
        [101, "yt_AAA", 30, "a dog barks"],
        [102, "yt_BBB", 0, "rain falls"],
        [103, "yt_AAA", 30, "a dog barks twice"],
        [104, "yt_CCC", 10, "a car passes"],
        [105, "yt_BBB", 0, "heavy rain"],
        [106, "yt_AAA", 30, "barking nearby"],
        [107, "yt_CCC", 10, "an engine revs"],
    ]
    _csv(root / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    # the three file name patterns people's downloads use
    _touch(root / "test" / "yt_AAA_30.wav")
    _touch(root / "test" / "yt_BBB.wav")
    _touch(root / "test" / "107.wav")
    return {"captions": [["a dog barks", "a dog barks twice", "barking nearby"], ["rain falls", "heavy rain"],
                         ["a car passes", "an engine revs"]],
            "files": ["yt_AAA_30.wav", "yt_BBB.wav", "107.wav"]}


def clotho(root: Path) -> dict:
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    rows = [["a b.wav"] + [f"water drips {i}" for i in range(5)], ["c.wav"] + [f"birds sing {i}" for i in range(5)]]
    _csv(root / "clotho_captions_evaluation.csv", header, rows)
    for r in rows:
        _touch(root / "evaluation" / r[0])
    return {}


def msvd(root: Path) -> dict:
    captions = {"vidA_1_5": [["a", "man", "cooks"], ["someone", "is", "cooking"]],
                "vidB_3_9": [["a", "cat", "plays"]],
                "vidC_0_4": [["a", "train", "passes"]]}
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    (root / "test_list.txt").write_text("vidA_1_5\nvidB_3_9\n")
    (root / "train_list.txt").write_text("vidC_0_4\n")
    for vid in captions:
        _touch(root / "YouTubeClips" / f"{vid}.avi")
    return {}


def msrvtt(root: Path) -> dict:
    _csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
         [["ret0", "msr7020", "video7020", "a woman sings"], ["ret1", "msr7021", "video7021", "a man runs"]])
    for v in ("video7020", "video7021"):
        _touch(root / "videos" / "all" / f"{v}.mp4")
    return {}


def esc50(root: Path) -> dict:
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    rows = [["1-100-A-0.wav", 1, 0, "dog", True, 100, "A"],
            ["1-101-A-14.wav", 1, 14, "chirping_birds", False, 101, "A"],
            ["2-102-A-0.wav", 2, 0, "dog", True, 102, "A"],
            ["3-103-A-10.wav", 3, 10, "rain", True, 103, "A"]]
    _csv(root / "meta" / "esc50.csv", header, rows)
    for r in rows:
        _touch(root / "audio" / r[0])
    return {}


def modelnet40(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("airplane\nchair\nnight_stand\n")
    (root / "modelnet40_test.txt").write_text("airplane_0627\nnight_stand_0201\n")
    (root / "modelnet40_train.txt").write_text("chair_0001\n")
    rng = np.random.default_rng(0)
    clouds = {}
    for name in ("airplane_0627", "night_stand_0201", "chair_0001"):
        cls = name.rsplit("_", 1)[0]
        pts = rng.normal(size=(8, 6)).astype(np.float32)
        clouds[name] = pts[:, :3]
        path = root / cls / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in pts) + "\n")
    return {"clouds": clouds}


def scanobjectnn(root: Path, n: int = 5) -> dict:
    import h5py

    rng = np.random.default_rng(1)
    data = rng.normal(size=(n, 16, 3)).astype(np.float32)
    label = np.array([0, 14, 4, 4, 9][:n], dtype=np.uint8)
    path = root / "h5_files" / "main_split_nobg" / "test_objectdataset.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["data"] = data
        h5["label"] = label
    return {"data": data, "label": label, "path": path}


def rsna(root: Path) -> dict:
    header = ["patientId", "x", "y", "width", "height", "Target"]
    rows = [["p1", "", "", "", "", 0],
            ["p2", 264.0, 152.0, 213.0, 379.0, 1],
            ["p2", 562.0, 152.0, 256.0, 453.0, 1],  # a second box of the same patient
            ["p3", "", "", "", "", 0]]
    _csv(root / "stage_2_train_labels.csv", header, rows)
    for p in ("p1", "p2", "p3"):
        _touch(root / "stage_2_train_images" / f"{p}.dcm")
    return {}


def mixbench(root: Path, subset: str = "MSCOCO", n_docs: int = 8) -> dict:
    sub = root / subset
    sub.mkdir(parents=True, exist_ok=True)
    docs = [{"corpus_id": str(i), "text": f"document {i} about topic {i % 3}", "image": f"img_{i}.jpg"}
            for i in range(n_docs)]
    docs.append({"corpus_id": "no_image", "text": "a document without an image", "image": None})
    with (sub / "corpus.jsonl").open("w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    mixed = [{"corpus_id": "0", "text": "document 0 about topic 0", "image": None},
             {"corpus_id": "1", "text": None, "image": "img_1.jpg"},
             {"corpus_id": "2", "text": "document 2 about topic 2", "image": "img_2.jpg"}]
    with (sub / "mixed_corpus.jsonl").open("w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in mixed)
    queries = [{"query_id": "0", "text": "topic 0", "image": None},
               {"query_id": "1", "text": "topic 1", "image": None},
               {"query_id": "2", "text": "topic 2", "image": None}]
    with (sub / "queries.jsonl").open("w") as fh:
        fh.writelines(json.dumps(q) + "\n" for q in queries)
    _csv(sub / "qrels" / "qrels.tsv", ["query_id", "corpus_id", "score"],
         [["0", "0", 1], ["0", "3", 1], ["1", "1", 1], ["2", "2", 2], ["2", "no_image", 1]], delimiter="\t")
    for d in docs:
        if d["image"]:
            _touch(sub / "images" / d["image"])
    return {"docs": docs, "subset": sub}
