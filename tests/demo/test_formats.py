"""Item files: real media that ordinary readers open, carrying a scene record."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from PIL import Image

from demo import formats, render
from demo.world import Scene
from textme.encoders.inputs import read_wav

SCENE = Scene("cat", "orange", "beach", "echoing", "tall")


def record(modality: str) -> str:
    return formats.scene_record(modality, f"{modality}/x", SCENE.to_dict())


def test_png_opens_in_pillow_with_its_pixels_and_record(tmp_path):
    pixels = render.render_image(SCENE, "x")
    path = tmp_path / "x.png"
    path.write_bytes(formats.png_bytes(pixels, {formats.METADATA_KEY: record("image")}))
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), pixels)
        assert im.text[formats.METADATA_KEY] == record("image")
    assert formats.read_record(path)["scene"] == SCENE.to_dict()


def test_wav_reads_back_at_48k_through_the_clap_reader(tmp_path):
    samples = render.render_audio(SCENE, "x")
    path = tmp_path / "x.wav"
    path.write_bytes(formats.wav_bytes(samples, record("audio")))
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48_000, 1, 2)
    back = read_wav(str(path), 48_000)
    np.testing.assert_allclose(back, samples, atol=1 / 16_000)
    assert formats.read_record(path)["modality"] == "audio"


def test_ply_round_trip(tmp_path):
    xyz, rgb = render.render_points(SCENE, "x")
    path = tmp_path / "x.ply"
    path.write_bytes(formats.ply_bytes(xyz, rgb, f"{formats.METADATA_KEY} {record('point')}"))
    xyz2, rgb2 = formats.read_ply(path)
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)
    assert formats.read_record(path)["scene"]["size"] == "tall"


def test_writers_are_byte_deterministic():
    a = formats.png_bytes(render.render_image(SCENE, "x"), {"k": "v"})
    b = formats.png_bytes(render.render_image(SCENE, "x"), {"k": "v"})
    c = formats.png_bytes(render.render_image(SCENE, "y"), {"k": "v"})
    assert a == b != c
    assert formats.wav_bytes(render.render_audio(SCENE, "x"), "c") == \
        formats.wav_bytes(render.render_audio(SCENE, "x"), "c")


def test_foreign_or_broken_files_are_named(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(formats.ItemFormatError, match=r"plain\.png: no 'textme-scene' record"):
        formats.read_record(plain)
    with pytest.raises(formats.ItemFormatError, match=r"notes\.txt: .*not '\.txt'"):
        (tmp_path / "notes.txt").write_text("hi")
        formats.read_record(tmp_path / "notes.txt")
    with pytest.raises(formats.ItemFormatError, match=r"missing\.wav: cannot read"):
        formats.read_record(tmp_path / "missing.wav")
    fake = tmp_path / "fake.wav"
    fake.write_bytes(b"not a riff file at all")
    with pytest.raises(formats.ItemFormatError, match=r"fake\.wav: not a WAV file"):
        formats.read_record(fake)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(formats.ItemFormatError, match=r"bad\.json: scene record is not valid JSON"):
        formats.read_record(bad)


def test_writers_refuse_wrong_shapes():
    with pytest.raises(ValueError, match=r"uint8 \[h, w, 3\]"):
        formats.png_bytes(np.zeros((4, 4), np.uint8), {})
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        formats.ply_bytes(np.zeros((4, 2), np.float32), np.zeros((4, 2), np.uint8), "c")
