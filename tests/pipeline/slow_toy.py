"""A toy encoder that sleeps before each forward pass, so a test can kill a run mid-way.

Importing this module registers it as "slow-toy". Its identity is the toy's own (the
delay changes nothing the cache keys on), so it shares the toy's cache namespaces. The
delay per encode call is TEXTME_TEST_ENCODE_DELAY seconds (default 0). With
TEXTME_TEST_ENCODE_TRACE set to a file, each encode call appends one JSON line to it:
pid, CUDA_VISIBLE_DEVICES, start and end times, inputs (how tests see where and when
Ray workers encoded).
"""

from __future__ import annotations

import json
import os
import time

from demo.encoders import ToyEncoder
from textme.encoders import register_encoder


@register_encoder("slow-toy")
class SlowToyEncoder(ToyEncoder):
    def _encode(self, tower, items, **kw):
        start = time.time()
        time.sleep(float(os.environ.get("TEXTME_TEST_ENCODE_DELAY", "0")))
        out = super()._encode(tower, items, **kw)
        trace = os.environ.get("TEXTME_TEST_ENCODE_TRACE")
        if trace:
            line = json.dumps({"pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                               "start": start, "end": time.time(), "n": len(items)})
            with open(trace, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        return out


def setup() -> None:
    """Ray's worker_process_setup_hook: importing this module registered the encoder."""
