"""CLAP (audio) through transformers' ClapModel + ClapProcessor, 48 kHz WAV inputs.

Default weights: laion/larger_clap_music_and_speech, the checkpoint the TextME code
loads for its CLAP encoder (512-d). Any CLAP repo or local folder works (`model`/`path`).

Two choices make outputs reproducible and independent of batching:
- audio longer than the feature extractor's window is cropped at random by transformers
  (`rand_trunc`, and random chunks for fused models); each file is featurised alone under
  a fixed numpy seed, so a file always gets the same crop;
- `is_longer` (which routes fused models through their fusion branch) is set from each
  file's real length; transformers would flag a random clip of an all-short batch.
Text: right padding with the attention mask, CLAP's own pooling + projection, and
`max_length` 77 tokens, the length LAION's CLAP was trained with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from .base import Encoder, resolve_dtype, torch_dtype
from .hub import WeightsSource
from .inputs import read_wav
from .registry import register_encoder

DEFAULT_MODEL = "laion/larger_clap_music_and_speech"
CROP_SEED = 0


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (which the feature extractor uses), restoring it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _features(output: Any):
    """transformers >= 5 returns an output object (pooler_output); older versions a tensor."""
    return output if hasattr(output, "shape") else output.pooler_output


@register_encoder("clap")
class ClapEncoder(Encoder):
    """CLAP: text tower ("text") and audio tower ("modal", 48 kHz PCM WAV files)."""

    adapter = "clap"
    embed_code_version = "1"
    default_batch_size = 32
    towers = ("text", "modal")
    modality = "audio"

    def __init__(self, *, model: str = DEFAULT_MODEL, path: str | None = None,
                 revision: str | None = None, max_length: int = 77, dtype: str = "float32",
                 device: str = "auto", batch_size: int | None = None) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.source = WeightsSource.from_options(model, path, revision, option="path")
        if int(max_length) < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.max_length = int(max_length)
        self._dtype_option = dtype
        resolve_dtype(dtype, "cpu")
        self._projection_dim: int | None = None
        self._model: Any = None
        self._processor: Any = None

    @property
    def dtype(self) -> str:
        return self.resolved_dtype(self._dtype_option, auto_on_cuda="float32")

    def _identity(self, tower: str) -> dict[str, Any]:
        ident: dict[str, Any] = {**self.source.identity(), "dtype": self.dtype, "normalisation": "l2"}
        if tower == "text":
            ident.update({"pooling": "clap_text_projection", "padding": "right",
                          "max_length": self.max_length})
        else:
            # The feature extractor's own settings (48 kHz, window, mel bins) are files of
            # the model revision/folder, already named above; these are our choices.
            ident.update({"pooling": "clap_audio_projection",
                          "preprocessing": {"reader": "wav_pcm", "channels": "mean", "resample": None,
                                            "crop_seed": CROP_SEED, "is_longer": "from_length"}})
        return ident

    @property
    def dim(self) -> int:
        if self._projection_dim is None:
            self._projection_dim = int(self.source.model_config().projection_dim)
        return self._projection_dim

    @property
    def sample_rate(self) -> int:
        self._ensure_loaded()
        return int(self._processor.feature_extractor.sampling_rate)

    def _load_weights(self) -> None:
        from transformers import ClapModel, ClapProcessor

        name, kwargs = self.source.load_args()
        try:
            processor = ClapProcessor.from_pretrained(name, **kwargs)
            model = ClapModel.from_pretrained(name, dtype=torch_dtype(self.dtype), **kwargs)
        except OSError as err:
            raise self.source.unavailable(err) from None
        self._projection_dim = int(model.config.projection_dim)
        self._processor = processor
        self._model = model.to(self.device).eval()

    def unload(self) -> None:
        self._model = self._processor = None

    def _encode(self, tower: str, items: list[str], *, batch_size: int, progress: bool) -> np.ndarray:
        self._ensure_loaded()
        batch = self._text_batch if tower == "text" else self._audio_batch
        return self._in_batches(tower, items, batch, batch_size=batch_size, progress=progress)

    def _text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        tok = self._processor.tokenizer(texts, padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            out = self._model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                attention_mask=tok["attention_mask"].to(self.device))
        return _features(out).float().cpu().numpy()

    def _audio_batch(self, paths: list[str]) -> np.ndarray:
        import torch

        fe = self._processor.feature_extractor
        rate = int(fe.sampling_rate)
        feats, longer = [], []
        for p in paths:
            wav = read_wav(p, rate)
            with _numpy_seed(CROP_SEED):
                out = fe(wav, sampling_rate=rate, return_tensors="np")
            feats.append(out["input_features"][0])
            longer.append([len(wav) > fe.nb_max_samples])
        x = torch.as_tensor(np.stack(feats)).to(self.device, dtype=torch_dtype(self.dtype))
        is_longer = torch.as_tensor(longer, dtype=torch.bool, device=self.device)
        with torch.inference_mode():
            out = self._model.get_audio_features(input_features=x, is_longer=is_longer)
        return _features(out).float().cpu().numpy()
