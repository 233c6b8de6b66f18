"""encode_chunk: with skip, exactly the inputs an encoder reports as undecodable are left
out, the others get the vectors they get without them, and the work stays bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.bad_items import encode_chunk, skipped_summary
from textme.encoders import BadItemError, EncoderInputError, get_encoder


@pytest.fixture
def toy_items(assets: Path, tmp_path: Path) -> tuple[list[str], set[str]]:
    """12 image items; 4 of them damaged (first, two in a row, last)."""
    import shutil

    paths = []
    for src in sorted((assets / "items" / "image").iterdir())[:12]:
        dst = tmp_path / src.name
        shutil.copy(src, dst)
        paths.append(str(dst))
    bad = {paths[0], paths[5], paths[6], paths[11]}
    for p in bad:
        Path(p).write_bytes(b"garbage")
    return paths, bad


def counting(enc):
    """The encoder, counting the items it decodes (the work, not the lists it is given)."""
    enc.decoded = 0
    one = enc._encode_one

    def encode_one(tower, x):
        enc.decoded += 1
        return one(tower, x)

    enc._encode_one = encode_one
    return enc


def test_skip_leaves_out_exactly_the_bad_items(toy_items):
    paths, bad = toy_items
    keys = [f"k{i}" for i in range(len(paths))]
    enc = counting(get_encoder("toy", modality="image", tower_seed=1, dim=16))
    kept, vectors, skipped = encode_chunk(enc, "modal", keys, paths, skip=True)
    decoded = enc.decoded
    good = [i for i, p in enumerate(paths) if p not in bad]
    assert kept == [keys[i] for i in good]
    np.testing.assert_allclose(vectors, enc.encode("modal", [paths[i] for i in good]), rtol=1e-6)
    assert [e.item for e in skipped] == [p for p in paths if p in bad]  # in input order
    assert all(isinstance(e, BadItemError) for e in skipped)
    assert decoded <= 2 * len(paths)  # an in-order encoder decodes each item twice at most
    assert skipped_summary(skipped, 2).endswith("; and 2 more") and paths[0] in skipped_summary(skipped, 2)


def test_fail_raises_the_first_bad_item_and_other_errors_always_fail(toy_items):
    paths, _ = toy_items
    enc = get_encoder("toy", modality="image", tower_seed=1, dim=16)
    with pytest.raises(BadItemError) as info:
        encode_chunk(enc, "modal", ["k"] * len(paths), paths, skip=False)
    assert info.value.item == paths[0]

    class Broken:
        def encode(self, tower, inputs):
            raise EncoderInputError("expected a list of file paths")  # not one item's fault

    with pytest.raises(EncoderInputError, match="expected a list"):
        encode_chunk(Broken(), "modal", ["k"], paths[:1], skip=True)


def test_all_bad_gives_no_vectors(toy_items):
    paths, bad = toy_items
    bad = sorted(bad)
    enc = get_encoder("toy", modality="image", tower_seed=1, dim=16)
    kept, vectors, skipped = encode_chunk(enc, "modal", bad, bad, skip=True)
    assert kept == [] and len(vectors) == 0 and [e.item for e in skipped] == bad
