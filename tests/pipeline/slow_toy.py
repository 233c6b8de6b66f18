"""A toy encoder that sleeps before each forward pass, so a test can kill a run mid-way.

Importing this module registers it as "slow-toy". Its identity is the toy's own (the
delay changes nothing the cache keys on), so it shares the toy's cache namespaces. The
delay per encode call is TEXTME_TEST_ENCODE_DELAY seconds (default 0).
"""

from __future__ import annotations

import os
import time

from demo.encoders import ToyEncoder
from textme.encoders import register_encoder


@register_encoder("slow-toy")
class SlowToyEncoder(ToyEncoder):
    def _encode(self, tower, items, **kw):
        time.sleep(float(os.environ.get("TEXTME_TEST_ENCODE_DELAY", "0")))
        return super()._encode(tower, items, **kw)
