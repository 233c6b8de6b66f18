"""MixBench (GR-CLIP's mixed-modality search benchmark), from a local copy of the
`mixed-modality-search/MixBench25` dataset repository.

Layout (one folder per subset: MSCOCO, Google_WIT, OVEN, VisualNews):

    <root>/<subset>/queries.jsonl        {"query_id", "text", "image"}   (split "query")
    <root>/<subset>/corpus.jsonl         {"corpus_id", "text", "image"}  (split "corpus")
    <root>/<subset>/mixed_corpus.jsonl   the released 1:1:1 mix          (split "mixed_corpus")
    <root>/<subset>/qrels/qrels.tsv      query_id <tab> corpus_id <tab> score, with a header
    <root>/<subset>/images/<image>       image paths are relative to images/

`corpus="corpus"` (the default) rebuilds the corpus as GR-CLIP's `retrieval_mixbench.py`
does: the documents with both a text and an image, in file order, then `random.seed(seed)`
(42), `perm = random.sample(range(n), n)` and document `perm[i]` gets mode
`["text", "image", "mixed"][i % 3]` (`textme.metrics.assign_modes`). A text document
keeps only its text, an image document only its image, a mixed one both. GR-CLIP drops a
document whose image file is missing; we refuse a copy with missing images (a broken
download) unless `missing_images="drop"`. `corpus="mixed_corpus"` takes the released mix.

Queries are ranked by their text (GR-CLIP embeds the query text only; OVEN's query
images are not used). Relevance: the qrels' integer scores for documents in the corpus;
a query left with none keeps an empty relevance (GR-CLIP scores it 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textme.data._layout import SHOW_MISSING, BenchmarkError, field, first_file, read_csv
from textme.data.manifest import json_lines
from textme.data.registry import Benchmark, BenchmarkData, register_benchmark

SUBSETS = ("MSCOCO", "Google_WIT", "OVEN", "VisualNews")
CORPORA = ("corpus", "mixed_corpus")


def _jsonl(bench: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        return list(json_lines(path, f"{bench}: {path}", BenchmarkError))
    except UnicodeDecodeError:
        raise BenchmarkError(f"{bench}: {path}: not UTF-8 text") from None


def _optional_text(bench: str, record: dict, key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BenchmarkError(f"{bench}: {where}: field {key!r} must be a string or null")
    return value


def _image_path(images: Path, subset_dir: Path, rel: str) -> Path:
    p = images / rel
    return p if p.is_file() or not (subset_dir / rel).is_file() else subset_dir / rel


def read_mixbench(root: Path, split: str, items_dir: Path | None, *, corpus: str = "corpus", seed: int = 42,
                  missing_images: str = "error") -> BenchmarkData:
    from textme.metrics import assign_modes

    bench = "mixbench"
    if corpus not in CORPORA:
        raise BenchmarkError(f"{bench}: option corpus must be one of {', '.join(CORPORA)}, got {corpus!r}")
    if missing_images not in ("error", "drop"):
        raise BenchmarkError(f"{bench}: option missing_images must be 'error' or 'drop', got {missing_images!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise BenchmarkError(f"{bench}: option seed must be an int, got {seed!r}")
    subset_dir = root if (root / "queries.jsonl").is_file() else root / split
    q_path = first_file(bench, [subset_dir / "queries.jsonl"], f"MixBench's {split} query split")
    c_path = first_file(bench, [subset_dir / f"{corpus}.jsonl"], f"MixBench's {split} {corpus} split")
    r_path = first_file(bench, [subset_dir / "qrels" / "qrels.tsv", subset_dir / "qrels.tsv"],
                        f"MixBench's {split} qrel split")
    images = subset_dir / "images"
    notes: list[str] = []

    docs: list[dict[str, Any]] = []
    missing: list[str] = []
    lacking = {"text": 0, "image": 0}
    for lineno, rec in _jsonl(bench, c_path):
        where = f"{c_path} line {lineno}"
        doc_id = str(field(bench, rec, "corpus_id", where, (str, int)))
        text = _optional_text(bench, rec, "text", where)
        rel = _optional_text(bench, rec, "image", where)
        path = _image_path(images, subset_dir, rel) if rel else None
        if path is not None and not path.is_file():
            missing.append(rel)
            continue
        if corpus == "corpus" and (text is None or path is None):
            lacking["text" if text is None else "image"] += 1
            continue  # GR-CLIP keeps the documents that have both embeddings
        if text is None and path is None:
            raise BenchmarkError(f"{bench}: {where}: document {doc_id!r} has neither text nor image")
        docs.append({"doc_id": doc_id, "text": text, "item": str(path) if path else None})
    if missing and missing_images == "error":
        first = ", ".join(missing[:SHOW_MISSING]) + (", ..." if len(missing) > SHOW_MISSING else "")
        raise BenchmarkError(f"{bench}: {len(missing)} image files of {c_path.name} not found under {images}: "
                             f"{first} (missing_images='drop' leaves those documents out, as GR-CLIP does)")
    if missing:
        notes.append(f"{len(missing)} documents whose image file is missing left out")
    notes += [f"{n} documents without {what} left out" for what, n in lacking.items() if n]
    if not docs:
        raise BenchmarkError(f"{bench}: {c_path}: no usable document")
    ids = [d["doc_id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise BenchmarkError(f"{bench}: {c_path}: duplicate corpus_id values")
    if corpus == "corpus":
        for doc, mode in zip(docs, assign_modes(len(docs), seed=seed)):
            if mode == "text":
                doc["item"] = None
            elif mode == "modal":
                doc["text"] = None

    queries: dict[str, str] = {}
    image_queries = 0
    for lineno, rec in _jsonl(bench, q_path):
        where = f"{q_path} line {lineno}"
        qid = str(field(bench, rec, "query_id", where, (str, int)))
        text = _optional_text(bench, rec, "text", where)
        image_queries += bool(rec.get("image"))
        if text is not None:
            queries[qid] = text
    if not queries:
        raise BenchmarkError(f"{bench}: {q_path}: no query with text")
    if image_queries:
        notes.append(f"{image_queries} query images not used (GR-CLIP ranks with the query text)")

    relevance: dict[str, dict[str, int]] = {q: {} for q in queries}
    known = set(ids)
    outside = 0
    for n, row in enumerate(read_csv(bench, r_path, ("query_id", "corpus_id", "score"), delimiter="\t"), start=1):
        try:
            grade = int(row["score"])
        except ValueError:
            raise BenchmarkError(f"{bench}: {r_path} row {n}: 'score' must be an integer, got {row['score']!r}") from None
        if grade < 0:
            raise BenchmarkError(f"{bench}: {r_path} row {n}: 'score' must be >= 0, got {grade}")
        if row["query_id"] in relevance and row["corpus_id"] in known:
            relevance[row["query_id"]][row["corpus_id"]] = grade
        else:
            outside += 1
    if outside:
        notes.append(f"{outside} qrels name a query or document not in the set, ignored")

    rows = [{"kind": "doc", **d} for d in docs]
    rows += [{"kind": "query", "query": queries[q], "relevance": relevance[q]} for q in queries]
    return BenchmarkData(bench, "mixed_search", split, rows, sources=[str(q_path), str(c_path), str(r_path)],
                         notes=notes)


register_benchmark(Benchmark(
    name="mixbench", task="mixed_search", reader=read_mixbench, splits=SUBSETS,
    options={"corpus": "corpus (GR-CLIP's seeded 1:1:1 assignment, default) or mixed_corpus (the released mix)",
             "seed": "seed of the assignment (default 42, GR-CLIP's)",
             "missing_images": "error (default) or drop (leave such documents out, as GR-CLIP does)"},
    description="MixBench mixed-modality search, GR-CLIP (text, image and image+text documents; NDCG@10)",
    download="git clone https://huggingface.co/datasets/mixed-modality-search/MixBench25 (git-lfs)",
))
