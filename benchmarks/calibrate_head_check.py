"""Where the head input check's thresholds come from: its figures on right and wrong inputs.

Trains heads the way the pipeline does (textme.train_projection on centred text) on
two kinds of data and prints the check's figures (textme.head_check) for inputs fed
as trained and for the mistakes the check is meant to catch:

- the demo's toy world (demo/encoders.py: toy_image 64-d, toy_audio 48-d, the toy pivot),
  with short training (3 steps, as the pipeline tests) and the demo's (125 steps);
- a synthetic CLIP-like encoder (256-d, unit text/modal vectors on two cones, a
  constant gap), trained on unit vectors, and a copy whose outputs are "raw" (norm
  ~ 10 +- 2 per row, as raw open_clip features are), trained on raw vectors as the
  official CLIP wrapper does.

    .venv/bin/python benchmarks/calibrate_head_check.py

No timing here: the figures are deterministic (seeded); their ranges are what
textme/head_check.py's docstring and docs/CONFIG.md quote.
"""

from __future__ import annotations

import json
from pathlib import Path
import tempfile

import numpy as np
import torch

from textme import Offset, TrainConfig, train_projection
from textme.head_check import MAX_MEAN_SHIFT, VAR_RATIO_RANGE, check_head_inputs

torch.set_num_threads(1)


def _toy(modality: str, seed: int, dim: int):
    from textme.encoders import get_encoder

    import demo.encoders  # noqa: F401  (registers the toy encoders)

    return get_encoder("toy", modality=modality, tower_seed=seed, dim=dim, gap_norm=2.5, noise=0.4)


def _demo_cases(rows: list, steps_label: str, epochs: int, batch: int, n_captions: int, items: Path) -> None:
    from textme.encoders import get_encoder

    import demo.encoders  # noqa: F401

    captions = [json.loads(l)["caption"] for l in
                (Path("demo/data/scenes_image.jsonl").read_text().splitlines()[:n_captions])]
    enc, other = _toy("image", 1, 64), _toy("image", 7, 64)
    pivot = get_encoder("toy-pivot", dim=64)
    paths = sorted(str(p) for p in (items / "image").iterdir())
    text, modal = enc.encode("text", captions), enc.encode("modal", paths)
    off = Offset.from_embeddings(text, modal)
    head, _ = train_projection(text, pivot.encode("text", captions), offset=off.text_mean,
                               config=TrainConfig(epochs=epochs, batch_size=batch, device="cpu"))
    ev = modal[-200:]
    o_modal = other.encode("modal", paths)[-200:]
    o_off = Offset.from_embeddings(other.encode("text", captions), other.encode("modal", paths))
    scale = np.random.default_rng(1).uniform(8, 12, size=(len(ev), 1)).astype(np.float32)
    cases = {
        "ok: training texts - mu_text": text - off.text_mean,
        "ok: items - mu_modal": ev - off.modal_mean,
        "ok: 30 items - mu_modal": ev[:30] - off.modal_mean,
        "bad: raw x10 items - mu_modal": ev * scale - off.modal_mean,
        "bad: offset = mean of raw x10 vectors": ev - (modal * 10).mean(axis=0),
        "blind: items, not centred": ev,
        "blind: items - mu_text": ev - off.text_mean,
        "blind: other weights (isotropic toy) - own mu_modal": o_modal - o_off.modal_mean,
    }
    for name, x in cases.items():
        rows.append((f"toy 64-d, {steps_label}", name, check_head_inputs(head, x)))


def _cone(rng, n, dim, centre, spread):
    x = centre + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _synthetic_cases(rows: list) -> None:
    rng = np.random.default_rng(0)
    dim, out, n = 256, 128, 4000
    latent = rng.standard_normal((n, 32))
    a = np.linalg.qr(rng.standard_normal((dim, 32)))[0]
    u_t, u_m = (v / np.linalg.norm(v) for v in rng.standard_normal((2, dim)))
    sem = latent @ a.T / np.sqrt(32)
    text = sem + 0.9 * u_t + 0.15 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    modal = sem + 0.9 * u_m + 0.15 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    modal /= np.linalg.norm(modal, axis=1, keepdims=True)
    pivot = np.tanh(latent @ rng.standard_normal((32, out)))
    text, modal, pivot = (v.astype(np.float32) for v in (text, modal, pivot))
    off = Offset.from_embeddings(text, modal)
    cfg = TrainConfig(epochs=10, batch_size=512, device="cpu")
    head, _ = train_projection(text[:3000], pivot[:3000], offset=off.text_mean, config=cfg)
    # raw open_clip-like norms: text and image towers' outputs differ in length
    norms_t = rng.uniform(7, 9, size=(n, 1)).astype(np.float32)
    norms_m = rng.uniform(9, 11, size=(n, 1)).astype(np.float32)
    raw_text, raw_modal = text * norms_t, modal * norms_m
    raw_head, _ = train_projection(raw_text[:3000], pivot[:3000], offset=off.text_mean, config=cfg)
    ev_m, ev_rm = modal[3000:], raw_modal[3000:]
    other = _cone(rng, 1000, dim, rng.standard_normal(dim) / np.sqrt(dim) * 3, 1.0).astype(np.float32)
    for name, h, x in [
        ("ok: unit items - mu_modal", head, ev_m - off.modal_mean),
        ("ok: 30 unit items - mu_modal", head, ev_m[:30] - off.modal_mean),
        ("bad: raw items - mu_modal (normalize: true needed)", head, ev_rm - off.modal_mean),
        ("bad: offset = mean of raw vectors", head, ev_m - raw_modal.mean(axis=0)),
        ("bad: other encoder's unit vectors", head, other - Offset.from_embeddings(other).text_mean),
        ("blind: unit items, not centred", head, ev_m),
        ("blind: unit items - mu_text", head, ev_m - off.text_mean),
        ("ok: raw head, raw items - mu_modal (official CLIP)", raw_head, ev_rm - off.modal_mean),
        ("bad: raw head, unit items - mu_modal (normalize: false needed)", raw_head, ev_m - off.modal_mean),
    ]:
        rows.append(("synthetic 256-d, 60 steps", name, check_head_inputs(h, x)))


def main() -> None:
    from demo.assets import prepare_demo

    rows: list = []
    with tempfile.TemporaryDirectory() as tmp:
        items = Path(prepare_demo(tmp)["root"]) / "items"
        _demo_cases(rows, "3 steps", epochs=3, batch=64, n_captions=120, items=items)
        _demo_cases(rows, "125 steps", epochs=25, batch=256, n_captions=1500, items=items)
    _synthetic_cases(rows)
    lo, hi = VAR_RATIO_RANGE
    print(f"thresholds: var_ratio in [{lo:g}, {hi:g}], mean_shift <= {MAX_MEAN_SHIFT:g}\n")
    print(f"{'data':28} {'inputs':62} {'var_ratio':>10} {'mean_shift':>10} {'verdict':>9}")
    for data, name, c in rows:
        print(f"{data:28} {name:62} {c.var_ratio:10.3g} {c.mean_shift:10.2f} {c.verdict:>9}")
    wrong = [(n, c) for _, n, c in rows if (n.startswith("ok") and not c.ok) or (n.startswith("bad") and c.ok)]
    print("(blind: a mistake the check cannot tell from the modality gap itself; shown for the record)")
    print("\nall verdicts as expected" if not wrong else f"\nUNEXPECTED: {[n for n, _ in wrong]}")


if __name__ == "__main__":
    main()
