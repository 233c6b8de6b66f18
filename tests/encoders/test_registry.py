"""Finding encoders by name: built-ins, entry-point plugins, and clear refusals."""

from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest

from textme.encoders import (ENTRY_POINT_GROUP, Encoder, UnknownEncoderError, get_encoder, list_encoders,
                             register_encoder)
from textme.encoders import registry

BUILTINS = {"qwen3-embedding", "open-clip", "clip", "remoteclip", "uni3d-text", "clap", "precomputed",
            "composite"}

PLUGIN_CODE = textwrap.dedent('''
    import numpy as np
    from textme.encoders import Encoder

    class EchoEncoder(Encoder):
        """Embeds a text as its length in one-hot-ish form (enough to see it ran)."""
        adapter = "echo"
        modality = "molecule"

        def __init__(self, *, size=4, device="auto", batch_size=None):
            super().__init__(device=device, batch_size=batch_size)
            self.size = size

        @property
        def dim(self):
            return self.size

        def _identity(self, tower):
            return {"size": self.size}

        def _encode(self, tower, items, *, batch_size, progress):
            out = np.zeros((len(items), self.size), np.float32)
            for i, t in enumerate(items):
                out[i, len(t) % self.size] = 1.0
            return out

    def make_echo(**options):
        return EchoEncoder(**options)

    def make_wrong(**options):
        return "not an encoder"
''')


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A tiny installed distribution on sys.path whose entry points name two encoders."""
    (tmp_path / "textme_echo_plugin.py").write_text(PLUGIN_CODE)
    dist = tmp_path / "textme_echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: textme-echo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "echo-test = textme_echo_plugin:make_echo\n"
        "wrong-test = textme_echo_plugin:make_wrong\n"
        "clip = textme_echo_plugin:make_echo\n"  # may not shadow a built-in
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("textme_echo_plugin", None)


def test_builtins_are_listed():
    assert BUILTINS <= set(list_encoders())
    assert list_encoders() == sorted(list_encoders())


def test_entry_point_plugin_is_found_by_name(plugin_dist):
    assert "echo-test" in list_encoders()
    enc = get_encoder("echo-test", size=5)
    assert type(enc).__name__ == "EchoEncoder" and isinstance(enc, Encoder)
    assert enc.name == "echo-test" and enc.dim == 5 and enc.modality == "molecule"
    vecs = enc.encode_text(["abc", "abcdefg"])
    assert vecs.shape == (2, 5) and vecs[0, 3] == 1.0 and vecs[1, 2] == 1.0
    assert enc.identity("text") == {"adapter": "echo", "embed_code_version": "1", "tower": "text", "size": 5}


def test_plugin_cannot_shadow_a_builtin(plugin_dist, caplog):
    enc = get_encoder("clip")
    assert type(enc).__name__ == "OpenClipEncoder"
    list_encoders()
    assert "plugin encoder 'clip'" in caplog.text and "ignored" in caplog.text


def test_plugin_must_return_an_encoder(plugin_dist):
    with pytest.raises(TypeError, match=r"encoder 'wrong-test' \(plugin textme_echo_plugin:make_wrong\) returned str"):
        get_encoder("wrong-test")


def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownEncoderError) as info:
        get_encoder("languagebind-v9")
    msg = str(info.value)
    assert msg.startswith("unknown encoder 'languagebind-v9'; known encoders: ")
    assert all(name in msg for name in BUILTINS) and ENTRY_POINT_GROUP in msg
    assert isinstance(info.value, KeyError)


def test_unknown_option_lists_accepted_options(tiny_qwen3):
    with pytest.raises(TypeError, match=r"encoder 'qwen3-embedding': unknown option\(s\) pooling; accepted: .*max_length"):
        get_encoder("qwen3-embedding", path=str(tiny_qwen3), pooling="mean")
    with pytest.raises(TypeError, match=r"encoder 'clip': unknown option\(s\) checkpoint"):
        get_encoder("clip", checkpoint="x.pt")


def test_register_encoder_refuses_a_taken_name(monkeypatch):
    monkeypatch.setattr(registry, "_BUILTINS", dict(registry._BUILTINS))

    @register_encoder("test-constant")
    class Constant(Encoder):
        adapter = "constant"
        towers = ("text",)

        @property
        def dim(self):
            return 2

        def _identity(self, tower):
            return {}

        def _encode(self, tower, items, *, batch_size, progress):
            return np.ones((len(items), 2))

    out = get_encoder("test-constant").encode_text(["x"])
    np.testing.assert_allclose(out, [[2 ** -0.5, 2 ** -0.5]])
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("test-constant")(lambda: None)


def test_installed_plugins_are_scanned_once_per_sys_path(monkeypatch, tmp_path):
    from importlib import metadata

    scans = []
    original = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: scans.append(kw) or original(**kw))
    monkeypatch.syspath_prepend(str(tmp_path / "a-new-folder"))  # a sys.path not scanned yet
    first = list_encoders()
    assert list_encoders() == first and scans == [{"group": ENTRY_POINT_GROUP}]
    monkeypatch.syspath_prepend(str(tmp_path / "another"))  # what is installed may differ: scanned again
    list_encoders()
    assert len(scans) == 2
