"""Where weights come from, and how an encoder's identity names them.

Weights come either from a local folder or file, or from the Hugging Face hub. The
identity names them by *content*, so the embedding cache is keyed on what was computed,
not on where it was read from:

- local folder / file: sha256 of the bytes (hashed once per process, memoised by
  path, size and mtime; moving a copy elsewhere keeps its identity);
- hub repository: repo id plus the commit a revision resolves to. A branch name such as
  "main" moves when the authors push (Qwen3-Embedding's tokenizer changed after its
  release), so it is resolved to a commit and the weights are then loaded *at that
  commit*: the identity and the loaded weights cannot disagree.

Nothing here downloads weights: resolving a revision is a metadata request, or a look
into the local hub cache when offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ModelUnavailableError

_COMMIT = re.compile(r"[0-9a-f]{40}")
_METADATA_TIMEOUT_S = 10.0  # a revision lookup must not hang `textme status` on a dead network
_CHUNK = 1 << 20

_file_hashes: dict[tuple[str, int, int], str] = {}
_revisions: dict[tuple[str, str], str] = {}
_host_reachable: dict[str, bool] = {}  # hub host -> resolvable, probed once per process
_HOST_PROBE_TIMEOUT_S = 3.0


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, memoised by (path, size, mtime) in-process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    digest = _file_hashes.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        digest = h.hexdigest()
        _file_hashes[key] = digest
    return digest


def _skipped(rel: Path) -> bool:
    # Hidden files (.git, .cache, our own build markers) and READMEs do not change outputs.
    return any(part.startswith(".") for part in rel.parts) or rel.name.lower().startswith("readme")


def sha256_tree(path: str | os.PathLike[str]) -> str:
    """sha256 over a folder's files (relative path + content hash), or of a single file."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        rel = f.relative_to(p)
        if _skipped(rel):
            continue
        h.update(rel.as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def _resolves(host: str) -> bool:
    """Whether `host` has an address (DNS may hang on a dead network: bounded wait)."""
    found: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            found.append(True)
        except OSError:
            found.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_HOST_PROBE_TIMEOUT_S)
    return bool(found and found[0])


def offline_reason() -> str | None:
    """Why the hub cannot be used now, or None when it may be.

    Besides HF_HUB_OFFLINE, a hub host that does not resolve (probed once per process)
    counts as offline, and huggingface_hub is switched to offline mode for the rest of
    the process: every library that downloads through it (transformers, open_clip, our
    own calls) then reads the local cache at once, instead of retrying each request
    for half a minute before failing.
    """
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if host not in _host_reachable and not constants.HF_HUB_OFFLINE:
        _host_reachable[host] = _resolves(host)
        if not _host_reachable[host]:
            constants.HF_HUB_OFFLINE = True
    if _host_reachable.get(host) is False:
        return f"this machine cannot reach {host}"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return None


def is_offline() -> bool:
    return offline_reason() is not None


def _cached_ref(repo_id: str, revision: str, repo_type: str = "model") -> str | None:
    """The commit a branch/tag pointed to when this machine last downloaded the repo."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / revision
    if ref.is_file():
        sha = ref.read_text().strip()
        return sha if _COMMIT.fullmatch(sha) else None
    return None


def resolve_revision(repo_id: str, revision: str | None = None) -> str:
    """The commit `revision` of `repo_id` resolves to; the revision itself when unknown.

    Order: a pinned 40-hex commit as given; the hub (one metadata request, skipped when
    HF_HUB_OFFLINE is set); the local hub cache's record of the ref; else the revision as
    written (then loading will fail too, with `ModelUnavailableError`). Memoised per
    process so identity and loading agree.
    """
    wanted = revision or "main"
    if _COMMIT.fullmatch(wanted):
        return wanted
    key = (repo_id, wanted)
    if key in _revisions:
        return _revisions[key]
    sha: str | None = None
    if not is_offline():
        try:
            from huggingface_hub import HfApi

            sha = HfApi().model_info(repo_id, revision=wanted, timeout=_METADATA_TIMEOUT_S).sha
        except Exception:  # offline, missing, gated: fall back to the local cache
            sha = None
    sha = sha or _cached_ref(repo_id, wanted) or wanted
    _revisions[key] = sha
    return sha


def _looks_local(model: str) -> bool:
    """A hub id is "name" or "org/name"; an existing path, or one that starts like a path, is local."""
    return (Path(model).expanduser().exists() or model.startswith(("/", ".", "~"))
            or model.count("/") > 1 or "\\" in model)


@dataclass(frozen=True)
class WeightsSource:
    """A model folder: local (`path`) or a hub repository (`repo_id` at `revision`)."""

    model: str  # what the user asked for: hub id, or the folder path
    local: Path | None
    revision: str | None
    option: str  # the option that points at a local copy, for error messages

    @classmethod
    def from_options(cls, model: str | None, path: str | os.PathLike[str] | None,
                     revision: str | None, *, option: str = "path") -> "WeightsSource":
        """`path` wins; a `model` that is an existing folder counts as local too."""
        if path is not None:
            return cls(str(path), Path(path).expanduser(), None, option)
        if model is None:
            raise ValueError(f"give `model` (a hub id) or `{option}` (a local folder)")
        if _looks_local(model):
            return cls(model, Path(model).expanduser(), None, option)
        return cls(model, None, revision, option)

    @property
    def is_local(self) -> bool:
        return self.local is not None

    def check_local(self) -> None:
        if self.local is not None and not self.local.exists():
            raise ModelUnavailableError(
                f"model folder {self.local} does not exist; set `{self.option}:` to a folder "
                f"holding the model (config.json, weights, tokenizer)")

    def identity(self) -> dict[str, Any]:
        """{"model", "revision" | "sha256"}: names the weights by content, not location.

        A local folder is "local" + the hash of its files: its path and name do not change
        outputs, so a copy elsewhere shares the cache.
        """
        if self.local is not None:
            self.check_local()
            return {"model": "local", "sha256": sha256_tree(self.local)}
        return {"model": self.model, "revision": resolve_revision(self.model, self.revision)}

    def load_args(self) -> tuple[str, dict[str, Any]]:
        """(name_or_path, kwargs) for a transformers `from_pretrained` call."""
        if self.local is not None:
            self.check_local()
            return str(self.local), {}
        return self.model, {"revision": resolve_revision(self.model, self.revision)}

    def model_config(self) -> Any:
        """The model's transformers config (config.json only, no weights)."""
        from transformers import AutoConfig

        name, kwargs = self.load_args()
        try:
            return AutoConfig.from_pretrained(name, **kwargs)
        except OSError as err:
            raise self.unavailable(err) from None

    def unavailable(self, err: BaseException) -> ModelUnavailableError:
        """The one-line error for a failed load, naming the model and the local option."""
        if self.local is not None:
            return ModelUnavailableError(
                f"model folder {self.local} could not be loaded ({_first_line(err)}); "
                f"check that `{self.option}:` points at a complete model folder")
        why = offline_reason() or "no such repo, or no access?"
        return ModelUnavailableError(
            f"model {self.model!r} could not be fetched from the Hugging Face hub ({why}); "
            f"download it elsewhere (e.g. `hf download {self.model} --local-dir DIR`) and set "
            f"`{self.option}: DIR`")


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def parse_hf_file(spec: str) -> tuple[str, str, str | None] | None:
    """`hf://owner/repo/path/in/repo[@revision]` -> (repo_id, filename, revision)."""
    if not spec.startswith("hf://"):
        return None
    body, _, revision = spec[len("hf://"):].partition("@")
    parts = body.split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"hub file {spec!r}: expected hf://owner/repo/path[@revision]")
    return f"{parts[0]}/{parts[1]}", parts[2], revision or None


def hf_file_identity(spec: str) -> dict[str, Any]:
    repo_id, filename, revision = parse_hf_file(spec)  # type: ignore[misc]
    return {"hub_file": f"{repo_id}/{filename}", "revision": resolve_revision(repo_id, revision)}


def download_hf_file(spec: str, *, option: str) -> str:
    """Fetch (or find in the local hub cache) an `hf://` weights file; one-line error if not."""
    from huggingface_hub import hf_hub_download

    repo_id, filename, revision = parse_hf_file(spec)  # type: ignore[misc]
    try:
        return hf_hub_download(repo_id, filename, revision=resolve_revision(repo_id, revision),
                               local_files_only=is_offline())
    except Exception:
        raise ModelUnavailableError(
            f"weights file {filename!r} of {repo_id!r} could not be fetched from the Hugging "
            f"Face hub ({offline_reason() or 'no such file, or no access?'}); "
            f"download it elsewhere and set `{option}: /local/{Path(filename).name}`") from None
