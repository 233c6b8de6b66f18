"""CLAP through transformers' ClapModel + ClapProcessor on a tiny saved model (48 kHz)."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from textme.encoders import EncoderInputError, get_encoder
from textme.encoders.inputs import write_wav

RATE = 48000


@pytest.fixture
def clap(tiny_clap):
    return get_encoder("clap", path=str(tiny_clap), device="cpu")


def _tone(freq: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def clips(tmp_path):
    paths = []
    # 0.5 s is padded to the tiny model's 1 s window; 2.5 s is longer and gets cropped
    for i, (freq, secs) in enumerate([(220.0, 0.5), (440.0, 1.0), (880.0, 2.5), (300.0, 2.5)]):
        p = tmp_path / f"clip{i}.wav"
        write_wav(p, _tone(freq, secs) + 0.05 * np.random.default_rng(i).standard_normal(int(secs * RATE)), RATE)
        paths.append(str(p))
    return paths


def test_identity(clap):
    text_id, modal_id = clap.identity("text"), clap.identity("modal")
    assert clap._model is None
    json.dumps([text_id, modal_id])
    assert text_id["max_length"] == 77 and text_id["padding"] == "right"
    assert modal_id["preprocessing"]["crop_seed"] == 0 and modal_id["sha256"] == text_id["sha256"]
    assert clap.dim == 32 and clap.modality == "audio"


def test_text_and_audio_outputs(clap, clips):
    t = clap.encode_text(["a dog barks", "rain on a window", "a car honks twice in the street"])
    a = clap.encode_modal(clips)
    assert t.shape == (3, 32) and a.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(np.vstack([t, a]), axis=1), 1.0, atol=1e-6)
    assert clap.sample_rate == RATE


def test_audio_is_deterministic_and_batch_independent(clap, clips):
    state = np.random.get_state()
    alone = np.concatenate([clap.encode_modal([p]) for p in clips])
    mixed = clap.encode_modal(clips[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(mixed, alone, atol=1e-5)  # long clips got the same crop both times
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1])  # the caller's RNG untouched


def test_text_batch_independent(clap):
    texts = ["a dog barks", "a cat meows near the window at night", "a horse"]
    alone = np.concatenate([clap.encode_text([t]) for t in texts])
    np.testing.assert_allclose(clap.encode_text(texts, batch_size=3), alone, atol=1e-5)


def test_wrong_sample_rate_names_file_and_rates(clap, clips, tmp_path):
    slow = tmp_path / "slow.wav"
    write_wav(slow, _tone(440.0, 1.0, 16000), 16000)
    with pytest.raises(EncoderInputError, match=r"audio .*slow\.wav: sample rate 16000 Hz, expected 48000 Hz"):
        clap.encode_modal([clips[0], str(slow)])


def test_unreadable_audio_is_named(clap, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000not really a wave file")
    with pytest.raises(EncoderInputError, match=r"audio .*junk\.wav: cannot be read as PCM WAV"):
        clap.encode_modal([str(junk)])


def test_stereo_is_averaged_to_mono(clap, tmp_path):
    mono = _tone(440.0, 1.0)
    stereo_path, mono_path = tmp_path / "stereo.wav", tmp_path / "mono.wav"
    write_wav(mono_path, mono, RATE)
    pcm = (np.clip(mono, -1, 1) * 32767).astype("<i2")
    with wave.open(str(stereo_path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.stack([pcm, pcm], axis=1).tobytes())
    np.testing.assert_allclose(clap.encode_modal([str(stereo_path)]), clap.encode_modal([str(mono_path)]),
                               atol=1e-6)
