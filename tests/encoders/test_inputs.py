"""Input readers: WAV decoding, point-cloud shape checks, item keys."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from textme.encoders import EncoderInputError
from textme.encoders.inputs import check_items, item_id, load_point_cloud, read_wav, write_wav


def _write_raw(path, frames: bytes, width: int, channels: int = 1, rate: int = 48000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)


def test_wav_16_and_24_bit_decode_to_the_same_signal(tmp_path):
    signal = np.array([0.0, 0.5, -0.5, 0.25, -1.0], np.float32)
    write_wav(tmp_path / "s16.wav", signal, 48000)
    ints = np.round(signal * (2 ** 23 - 1)).astype(np.int32)
    b24 = np.stack([(ints >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8).tobytes()
    _write_raw(tmp_path / "s24.wav", b24, 3)
    a, b = read_wav(str(tmp_path / "s16.wav"), 48000), read_wav(str(tmp_path / "s24.wav"), 48000)
    np.testing.assert_allclose(a, signal, atol=1e-4)
    np.testing.assert_allclose(b, signal, atol=1e-6)
    assert a.dtype == b.dtype == np.float32


def test_wav_errors_name_the_file(tmp_path):
    write_wav(tmp_path / "cd.wav", np.zeros(100), 44100)
    with pytest.raises(EncoderInputError, match=r"audio .*cd\.wav: sample rate 44100 Hz, expected 48000 Hz"):
        read_wav(str(tmp_path / "cd.wav"), 48000)
    _write_raw(tmp_path / "empty.wav", b"", 2)
    with pytest.raises(EncoderInputError, match=r"empty\.wav: no samples"):
        read_wav(str(tmp_path / "empty.wav"), 48000)
    with pytest.raises(EncoderInputError, match=r"missing\.wav: file not found"):
        read_wav(str(tmp_path / "missing.wav"), 48000)


@pytest.mark.parametrize("shape, ok", [((100, 3), True), ((50, 6), True), ((100, 4), False),
                                       ((3,), False), ((0, 3), False), ((2, 100, 3), False)])
def test_point_cloud_shapes(tmp_path, shape, ok):
    path = tmp_path / "cloud.npy"
    np.save(path, np.zeros(shape, np.float64))
    if ok:
        cloud = load_point_cloud(str(path))
        assert cloud.shape == shape and cloud.dtype == np.float32
    else:
        with pytest.raises(EncoderInputError, match=r"point cloud .*cloud\.npy: shape \[.*\], expected \[n, 3\] or \[n, 6\]"):
            load_point_cloud(str(path))


def test_items_and_item_ids(tmp_path):
    with pytest.raises(EncoderInputError, match="got a single path"):
        check_items("one.png")
    with pytest.raises(EncoderInputError, match="item 1: expected a file path, got int 7"):
        check_items(["a.png", 7])
    assert check_items([tmp_path / "a.png"]) == [str(tmp_path / "a.png")]
    assert item_id("/d/000123.png", "stem") == "000123"
    assert item_id("/d/000123.png", "name") == "000123.png"
    assert item_id("/d/000123.png", "path") == "/d/000123.png"


def test_undecodable_files_raise_bad_item_errors_naming_the_item(tmp_path):
    """Each reader names the one item it cannot decode, so a caller can leave it out."""
    import pickle

    from textme.encoders import BadItemError
    from textme.encoders.inputs import load_image

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    wav = tmp_path / "a.wav"
    write_wav(wav, np.sin(np.linspace(0, 100, 4800)), 48000)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(wav.read_bytes()[:2000])
    cloud = tmp_path / "p.npy"
    np.save(cloud, np.zeros((4, 5), np.float32))
    cases = [
        (lambda: load_image(str(garbage)), garbage, "cannot be read as an image"),
        (lambda: load_image(str(tmp_path / "gone.png")), tmp_path / "gone.png", "file not found"),
        (lambda: read_wav(str(truncated), 48000), truncated, "truncated"),
        (lambda: read_wav(str(wav), 16000), wav, "sample rate 48000 Hz"),
        (lambda: load_point_cloud(str(cloud)), cloud, "shape [4, 5]"),
    ]
    for call, path, words in cases:
        with pytest.raises(BadItemError) as info:
            call()
        err = info.value
        assert err.item == str(path) and str(path) in str(err) and words in str(err), str(err)
        assert isinstance(err, EncoderInputError)  # callers catching the old type still do
        again = pickle.loads(pickle.dumps(err))  # crosses process boundaries (Dask, Ray) whole
        assert (type(again), again.item, str(again)) == (BadItemError, err.item, str(err))
