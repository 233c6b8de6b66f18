"""Leaving out the items an encoder cannot decode (a dataset's `on_bad_item: skip`).

An encoder raises `textme.encoders.BadItemError` naming the one input it could not read
(a corrupt, truncated or unreadable file). `encode_chunk` drops exactly that input and
encodes the rest again, the part before it and the part after it separately, so the
vectors of good items are the same as without the bad one (no item's vector depends on
its batch). Encoders that read their inputs in order (all of ours) fail at the bad
item, so a chunk with b bad items is encoded at most about twice over, whatever b is.
Any other error (a model that does not load, a batch that does not fit) still fails.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["encode_chunk", "skipped_summary", "SHOWN_SKIPPED"]

#: Skipped items named in log lines and in embed_log's `skipped` column.
SHOWN_SKIPPED = 5


def encode_chunk(enc: Any, tower: str, keys: Sequence[str], inputs: Sequence[str], *,
                 skip: bool) -> tuple[list[str], np.ndarray, list[Any]]:
    """`enc.encode(tower, inputs)`; with `skip`, inputs the encoder reports as bad
    (`BadItemError`) are left out. Returns (keys of the vectors, vectors in that order,
    the BadItemErrors of the skipped inputs, in input order)."""
    if not skip:
        return list(keys), enc.encode(tower, list(inputs)), []
    from textme.encoders.errors import BadItemError

    kept_keys: list[str] = []
    vectors: list[np.ndarray] = []
    bad: list[Any] = []
    todo = [(list(keys), list(inputs))]  # a stack of runs still to encode, first run on top
    while todo:
        run_keys, run_inputs = todo.pop()
        if not run_inputs:
            continue
        try:
            out = enc.encode(tower, run_inputs)
        except BadItemError as err:
            try:
                at = run_inputs.index(err.item)
            except ValueError:
                raise err from None  # not one of these inputs: nothing to leave out
            bad.append(err)
            todo.append((run_keys[at + 1:], run_inputs[at + 1:]))
            todo.append((run_keys[:at], run_inputs[:at]))
            continue
        kept_keys.extend(run_keys)
        vectors.append(out)
    if not vectors:
        return [], np.zeros((0, 0), np.float32), bad
    position = {x: i for i, x in enumerate(inputs)}
    bad.sort(key=lambda err: position[err.item])
    return kept_keys, np.concatenate(vectors), bad


def skipped_summary(bad: Sequence[Any], limit: int = SHOWN_SKIPPED) -> str:
    """The first skipped items' messages (each names its file), `; `-joined."""
    shown = "; ".join(str(err) for err in bad[:limit])
    return shown + (f"; and {len(bad) - limit} more" if len(bad) > limit else "")
