"""The method's central claim on a synthetic world with a modality gap.

Paired latent vectors z are rendered by two "towers" of one contrastive encoder: the
same semantic map A for text and modal inputs, plus a different large constant vector
per tower (the modality gap) and independent noise, then L2-normalised. A pivot "LLM"
embeds the same z through its own non-linear map. The head is trained on text only.

Claim: trained with centring (text - mu_text) and fed modal items centred with their
own centroid (modal - mu_modal), the head retrieves modal items from pivot text
queries far above chance, and clearly better than

- the same training without centring (head trained on raw text, modal fed raw), and
- a head trained with centring but fed modal items centred with mu_text.

Because BatchNorm follows the first Linear, those two failures are the same model
(the constant offset only moves BatchNorm's running mean); `test_offset_only_moves_
batchnorm_running_mean` pins that fact, which is why the honest "without centring"
baseline is raw-trained / raw-fed and not "centred head, raw modal".
"""

import numpy as np
import pytest
import torch

from textme import Offset, TrainConfig, project, train_projection
from textme.metrics import retrieval_metrics

from .helpers import unit_rows

N_TRAIN, N_TEST = 2500, 500  # chance R@1 on the test items: 0.2 %
CFG = TrainConfig(epochs=20, batch_size=256, lr=2e-3, seed=0, device="cpu")  # a small, fast recipe


def _world(seed=0, n=N_TRAIN + N_TEST, k=8, d=32, d_pivot=48, gap=2.0, noise=0.1):
    rng = np.random.default_rng(seed)
    a = np.linalg.qr(rng.standard_normal((d, k)))[0]  # shared semantic map of both towers
    b = rng.standard_normal((d_pivot, k))  # the pivot's own view of the same latent
    c_text, c_modal = (gap * v / np.linalg.norm(v) for v in rng.standard_normal((2, d)))
    z = rng.standard_normal((n, k))
    text = unit_rows(z @ a.T + c_text + noise * rng.standard_normal((n, d)))
    modal = unit_rows(z @ a.T + c_modal + noise * rng.standard_normal((n, d)))
    pivot = unit_rows(np.tanh(z @ b.T) + 0.05 * rng.standard_normal((n, d_pivot)))
    return text, modal, pivot


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    text, modal, pivot = _world()
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, None)
    # centroids from the training split only (mu_modal from modal items, no pairing used)
    offset = Offset.from_embeddings(text[train], modal[train])
    centred, _ = train_projection(text[train], pivot[train], offset=offset.text_mean, config=CFG)
    raw, _ = train_projection(text[train], pivot[train], offset=None, config=CFG)
    return dict(text=text[test], modal=modal[test], queries=pivot[test], offset=offset,
                centred=centred, raw=raw)


def _r1(queries, items):
    return retrieval_metrics(queries, items)["R@1"]


def test_world_has_a_large_gap(trained):
    offset = trained["offset"]
    assert offset.gap_norm > 0.6  # CLIP-like: centroids far apart relative to unit vectors
    # ... and the towers agree semantically once the gap is removed
    text_c = trained["text"] - offset.text_mean
    modal_c = trained["modal"] - offset.modal_mean
    assert _r1(text_c, modal_c) > 90


def test_centred_transfer_beats_no_centring(trained):
    off, queries = trained["offset"], trained["queries"]
    with_centring = _r1(queries, project(trained["centred"], trained["modal"], off.modal_mean))
    without = _r1(queries, project(trained["raw"], trained["modal"], None))
    text_side = _r1(queries, project(trained["centred"], trained["text"], off.text_mean))
    assert with_centring > 80, with_centring  # far above chance (0.2 %)
    assert with_centring > without + 25, (with_centring, without)
    assert with_centring > text_side - 10  # modal items land almost where text does


def test_modal_centred_with_the_text_centroid_fails(trained):
    # the test can fail: centring modal inputs with the wrong centroid leaves the gap in
    off, queries = trained["offset"], trained["queries"]
    right = _r1(queries, project(trained["centred"], trained["modal"], off.modal_mean))
    wrong = _r1(queries, project(trained["centred"], trained["modal"], off.text_mean))
    assert right > wrong + 25, (right, wrong)


# A bias right before BatchNorm has no effect in training (BN subtracts the batch mean)
# and only drifts under Adam's noise; it is absorbed with the running mean at eval.
_ABSORBED = {"mlps.0.bias", "mlps.1.running_mean", "mlps.3.bias", "mlps.4.running_mean"}


def test_offset_only_moves_batchnorm_running_mean(trained):
    centred, raw, off = trained["centred"], trained["raw"], trained["offset"]
    for key, value in centred.state_dict().items():
        if key not in _ABSORBED and value.is_floating_point():
            torch.testing.assert_close(value, raw.state_dict()[key], rtol=1e-4, atol=1e-5)
    # so "raw head, raw modal" == "centred head, modal centred with mu_text"
    a = project(raw, trained["modal"], None)
    b = project(centred, trained["modal"], off.text_mean)
    np.testing.assert_allclose(a, b, atol=2e-3)
