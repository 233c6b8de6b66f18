"""Small helpers shared by the method tests."""

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (what encoders hand us)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
