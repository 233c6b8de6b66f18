"""The storage layer: fingerprints, the embedding cache, Parquet tables, the DuckDB catalog.

    from storage.fingerprint import fingerprint, canonical_json, normalize_text, text_key, file_key
    from storage.cache import EmbeddingCache      # row-addressed segments + manifest + key index
    from storage.tables import TableStore, SCHEMAS
    from storage.catalog import build_catalog

One module per job: `fingerprint` (content keys), `fs` (a root on any fsspec
filesystem, atomic writes), `manifest` (which segments are published), `segments`
(one immutable batch of vectors; `segments_v1` reads the older Zarr format), `keyindex`
(key digests -> rows), `cache` (namespaces, one open per process),
`parts` (each table's own manifest of checksummed parts), `tables` and `catalog`. Nothing here imports torch, textme, prefect, tasks or flows,
and importing this package imports none of its modules (fingerprints stay cheap).
"""
