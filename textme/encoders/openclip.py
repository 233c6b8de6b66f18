"""CLIP-family encoders through open_clip: any architecture, any pretrained tag or file.

Built-in names:
- "open-clip": any `open_clip.list_models()` architecture (or a custom JSON config
  file) with a pretrained tag, a local checkpoint file, or an `hf://owner/repo/file`
  checkpoint on the hub; or a whole open_clip model repository, named as open_clip
  names them: `hf-hub:owner/repo` (config, weights and tokenizer from the hub, at the
  commit its revision resolves to) or `local-dir:/folder` (the same files in a folder,
  e.g. from `hf download owner/repo --local-dir /folder`). These take no `pretrained`.
- "clip": the paper's image encoder. The TextME table lists CLIP at 1024 dimensions, and
  its released CLIP projection (85 MB, the same size as Uni3D's 1024-d one; the 768-d
  ones are 59 MB) confirms an input of 1024, so not ViT-L/14 (768-d, which the TextME code
  names). Among open_clip's 1024-d models, ViT-H-14 laion2b_s32b_b79k scores 77.64 R@1
  on Flickr30k text->image in open_clip's retrieval table, against the paper's
  "pretrained" 77.70 (ViT-g-14 laion2b_s34b_b88k, also 1024-d, scores 77.72: the other
  candidate; pass `model`/`pretrained` to use it).
- "remoteclip": RemoteCLIP = open_clip architecture + the authors' checkpoint from the
  hub repo chendelong/RemoteCLIP (ViT-L-14 gives the paper's 768-d), or a local file.
- "uni3d-text": Uni3D's text side, the EVA-CLIP text tower it was aligned to
  (open_clip EVA02-E-14-plus, laion2b_s9b_b144k, 1024-d); text tower only, the image
  tower is dropped after loading.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoder, resolve_dtype, torch_dtype
from .errors import ModelUnavailableError
from .hub import (
    download_hf_file,
    hf_file_identity,
    is_offline,
    offline_reason,
    parse_hf_file,
    resolve_revision,
    sha256_file,
    sha256_tree,
)
from .inputs import load_image
from .registry import register_encoder

_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
HF_HUB_PREFIX, LOCAL_DIR_PREFIX = "hf-hub:", "local-dir:"
_REPO_CONFIG = "open_clip_config.json"  # {"model_cfg": ..., "preprocess_cfg": ...} of a model repo
# Weights files of an open_clip model repo, in open_clip's order of preference; only one
# is fetched (repos often hold the same weights in several formats).
_REPO_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# open_clip's image preprocessing defaults and merge rule (open_clip.transform's
# PreprocessCfg and merge_preprocess_dict), restated so that an identity needs no
# open_clip import, which pulls in torch and torchvision: seconds on every re-run, for
# a custom config and a local weights file. `_load_weights` compares the result with
# what open_clip resolves and refuses to embed on a difference; a test compares both.
_PREPROCESS_DEFAULTS = {"size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
                        "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic",
                        "resize_mode": "shortest", "fill_color": 0}


def _merge_preprocess(base: dict[str, Any], overlay: dict[str, Any] | None) -> dict[str, Any]:
    merged = {k: v for k, v in base.items() if k in _PREPROCESS_DEFAULTS}
    merged.update({k: v for k, v in (overlay or {}).items() if k in _PREPROCESS_DEFAULTS and v is not None})
    return merged


def _canonical_sha256(obj: Any) -> str:
    import hashlib

    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _unknown_model(model: str) -> ValueError:
    import open_clip

    names = open_clip.list_models()
    close = difflib.get_close_matches(model, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"open_clip has no model {model!r}{hint} ({len(names)} known: see "
                      f"open_clip.list_models()), and it is not a JSON config file")


@register_encoder("open-clip")
class OpenClipEncoder(Encoder):
    """An open_clip model: text tower ("text") and image tower ("modal")."""

    adapter = "open-clip"
    embed_code_version = "1"
    default_batch_size = 64
    local_option = "pretrained"  # the option that points at a local weights file

    def __init__(self, *, model: str | None = None, pretrained: str | None = None,
                 model_config: str | None = None, revision: str | None = None,
                 quick_gelu: bool | None = None, dtype: str = "float32", modality: str = "image",
                 towers: Sequence[str] = ("text", "modal"), device: str = "auto",
                 batch_size: int | None = None) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.repo: tuple[str, str] | None = None  # hf-hub: (repo id, commit)
        self.repo_dir: Path | None = None  # local-dir: the folder
        repo_cfg: dict[str, Any] | None = None
        if model_config is None and model is not None and model.endswith(".json"):
            model_config = model
        if model is not None and model.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
            if pretrained or model_config:
                raise ValueError(f"model {model!r} names a whole open_clip model repository: its weights "
                                 f"come with it, so drop `pretrained` / `model_config`")
            repo_cfg = self._repo_config(model, revision)
            self.arch, self.config_path = model, None
            self.config = repo_cfg["model_cfg"]
        elif model_config is not None:
            path = Path(model_config).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"open_clip model config {path} not found")
            self.arch = path.stem
            if model not in (None, str(model_config), self.arch):
                raise ValueError(f"model {model!r} and model_config {str(path)!r} disagree: "
                                 f"a custom config's model name is its file stem {self.arch!r}")
            self.config_path: Path | None = path
            self.config: dict[str, Any] = json.loads(path.read_text())
        elif model is None:
            raise ValueError("open-clip needs `model` (an open_clip model name) or `model_config`")
        else:
            import open_clip

            self.arch, self.config_path = model, None
            self.config = open_clip.get_model_config(model)
            if self.config is None:
                raise _unknown_model(model)
        for key in ("embed_dim", "vision_cfg", "text_cfg"):
            if key not in self.config:
                raise ValueError(f"open_clip config for {self.arch!r} has no {key!r}")

        if repo_cfg is not None:
            self._weights_kind, self.pretrained = "repo", ""
            self.tag_cfg = dict(repo_cfg.get("preprocess_cfg") or {})  # what open_clip merges in
        else:
            self.pretrained = self._check_pretrained(pretrained)
            self.tag_cfg = {}
            if self._weights_kind == "tag":
                import open_clip

                self.tag_cfg = open_clip.get_pretrained_cfg(self.arch, self.pretrained)
        if quick_gelu is None:
            quick_gelu = bool(self.tag_cfg.get("quick_gelu", self.config.get("quick_gelu", False)))
        self.quick_gelu = bool(quick_gelu)
        self._dtype_option = dtype
        resolve_dtype(dtype, "cpu")  # validate the name early
        self.modality = modality
        bad = [t for t in towers if t not in ("text", "modal")]
        if bad or not towers:
            raise ValueError(f"towers {list(towers)!r}: expected a non-empty subset of ('text', 'modal')")
        self.towers = tuple(towers)
        self._model: Any = None
        self._tokenizer: Any = None
        self._preprocess: Any = None

    # ---- weights -----------------------------------------------------------------
    def _repo_config(self, model: str, revision: str | None) -> dict[str, Any]:
        """open_clip_config.json of an `hf-hub:` repo (fetched at the commit its revision
        resolves to) or a `local-dir:` folder; one-line errors when it cannot be had."""
        if model.startswith(LOCAL_DIR_PREFIX):
            self.repo_dir = Path(model[len(LOCAL_DIR_PREFIX):]).expanduser()
            path = self.repo_dir / _REPO_CONFIG
            if not path.is_file():
                raise ModelUnavailableError(
                    f"open_clip model folder {self.repo_dir} has no {_REPO_CONFIG}; point `model: "
                    f"local-dir:DIR` at a folder holding an open_clip model repository's files")
        else:
            repo_id = model[len(HF_HUB_PREFIX):].strip("/")
            if repo_id.count("/") != 1:
                raise ValueError(f"model {model!r}: expected hf-hub:<owner>/<repo>")
            self.repo = (repo_id, resolve_revision(repo_id, revision))
            path = Path(self._from_hub([_REPO_CONFIG], what=_REPO_CONFIG)) / _REPO_CONFIG
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelUnavailableError(f"{path}: not a readable open_clip config ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
            raise ModelUnavailableError(f"{path}: an open_clip config needs a 'model_cfg' mapping")
        return data

    def _from_hub(self, patterns: list[str], *, what: str) -> str:
        """The local snapshot folder of the hf-hub repo at its commit, holding `patterns`."""
        from huggingface_hub import snapshot_download

        assert self.repo is not None
        repo_id, commit = self.repo
        offline_reason()  # an unreachable hub: read the local cache at once, no retries
        try:
            folder = snapshot_download(repo_id, revision=commit, allow_patterns=patterns,
                                       local_files_only=is_offline())
            missing = [p for p in patterns if "*" not in p and not (Path(folder) / p).is_file()]
        except Exception as err:
            folder, missing = None, [f"no such repo, or no access? {type(err).__name__}"]
        if missing and (folder is None or is_offline()):
            raise ModelUnavailableError(
                f"open_clip model 'hf-hub:{repo_id}' ({what}) could not be fetched from the Hugging Face "
                f"hub ({offline_reason() or missing[0]}); download it elsewhere (`hf download {repo_id} "
                f"--local-dir DIR`) and set `model: local-dir:DIR`")
        if missing:
            raise ModelUnavailableError(
                f"open_clip model 'hf-hub:{repo_id}' at {commit[:12]}: the repository has no {missing[0]}")
        return folder

    def _repo_folder(self) -> Path:
        """A folder with the repo's config, one weights file and the tokenizer files."""
        if self.repo_dir is not None:
            return self.repo_dir
        from open_clip.factory import _find_checkpoint_in_dir

        small = ["*.json", "*.txt", "*.model"]  # configs, tokenizer files
        folder = Path(self._from_hub(small, what="config and tokenizer files"))
        if _find_checkpoint_in_dir(folder) is None:
            errors = []
            for weights in _REPO_WEIGHTS:
                try:
                    return Path(self._from_hub([*small, weights], what="weights"))
                except ModelUnavailableError as err:
                    errors.append(err)
            raise errors[0]
        return folder

    def _check_pretrained(self, pretrained: str | None) -> str:
        if parse_hf_file(pretrained or ""):
            self._weights_kind = "hub_file"
            return pretrained
        if pretrained and os.path.isfile(os.path.expanduser(pretrained)):
            self._weights_kind = "file"
            return os.path.expanduser(pretrained)
        import open_clip  # a tag, or an error listing the tags

        if not pretrained:
            tags = open_clip.list_pretrained_tags_by_model(self.arch)
            raise ValueError(f"open-clip model {self.arch!r} needs `pretrained`: a tag "
                             f"({', '.join(tags) or 'none for this model'}), a checkpoint file, "
                             f"or hf://owner/repo/file")
        if open_clip.get_pretrained_cfg(self.arch, pretrained):
            self._weights_kind = "tag"
        else:
            tags = open_clip.list_pretrained_tags_by_model(self.arch)
            raise ValueError(f"pretrained {pretrained!r} for {self.arch!r} is neither a file nor a "
                             f"known tag (tags: {', '.join(tags) or 'none'})")
        return pretrained

    def _weights_identity(self) -> dict[str, Any]:
        if self._weights_kind == "repo":
            if self.repo is not None:
                return {"hf_hub": self.repo[0], "revision": self.repo[1]}
            assert self.repo_dir is not None
            return {"weights_sha256": sha256_tree(self.repo_dir)}  # config, weights, tokenizer
        if self._weights_kind == "tag":
            return {"pretrained": self.pretrained, "hf_hub": self.tag_cfg.get("hf_hub") or None}
        if self._weights_kind == "hub_file":
            return hf_file_identity(self.pretrained)
        return {"weights_sha256": sha256_file(self.pretrained)}

    def _fetch_weights(self) -> str:
        """A tag (fetched into the cache here, so failure is one clear line) or a file path."""
        import open_clip

        if self._weights_kind == "repo":
            return f"{LOCAL_DIR_PREFIX}{self._repo_folder()}"
        if self._weights_kind == "hub_file":
            return download_hf_file(self.pretrained, option=self.local_option)
        if self._weights_kind == "tag":
            offline_reason()  # an unreachable hub: fail from the local cache now, no retries
            try:
                open_clip.download_pretrained(self.tag_cfg)
            except Exception:
                where = self.tag_cfg.get("hf_hub") or self.tag_cfg.get("url") or "its source"
                why = offline_reason() or "no such file, or no access?"
                raise ModelUnavailableError(
                    f"open_clip weights {self.arch}/{self.pretrained} could not be fetched from "
                    f"{where.rstrip('/')} ({why}); download the checkpoint elsewhere and set "
                    f"`{self.local_option}: /local/checkpoint.safetensors`") from None
        return self.pretrained

    # ---- identity and dimension --------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.resolved_dtype(self._dtype_option, auto_on_cuda="float32")

    @property
    def dim(self) -> int:
        return int(self.config["embed_dim"])

    def preprocess_cfg(self) -> dict[str, Any]:
        """Image preprocessing as open_clip will resolve it: defaults <- config <- tag."""
        cfg = _merge_preprocess(_PREPROCESS_DEFAULTS, self.config.get("preprocess_cfg", {}))
        cfg = _merge_preprocess(cfg, self.tag_cfg)
        size = self.config["vision_cfg"].get("image_size", cfg["size"])
        cfg["size"] = list(size) if isinstance(size, (list, tuple)) else [size, size]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(cfg.items())}

    def _identity(self, tower: str) -> dict[str, Any]:
        ident: dict[str, Any] = {"model": self.arch if self.repo_dir is None else "local-dir"}
        if self.repo is not None:
            ident["model"] = f"{HF_HUB_PREFIX}{self.repo[0]}"
        if self.config_path is not None:
            ident["model_config_sha256"] = _canonical_sha256(self.config)
        ident.update(self._weights_identity())
        ident.update({"quick_gelu": self.quick_gelu, "dtype": self.dtype, "normalisation": "l2"})
        if tower == "text":
            text_cfg = self.config["text_cfg"]
            ident["pooling"] = text_cfg.get("pool_type", "argmax")
            ident["max_length"] = int(text_cfg.get("context_length", 77))
            ident["tokenizer"] = text_cfg.get("hf_tokenizer_name") or "open_clip.SimpleTokenizer"
        else:
            vision_cfg = self.config["vision_cfg"]
            ident["pooling"] = vision_cfg.get("pool_type") or vision_cfg.get("timm_pool") or "tok"
            ident["preprocessing"] = self.preprocess_cfg()
        return ident

    # ---- loading -----------------------------------------------------------------
    def _load_weights(self) -> None:
        import open_clip
        import torch

        if self.config_path is not None:
            open_clip.add_model_config(self.config_path)
        weights = self._fetch_weights()
        kwargs: dict[str, Any] = {}
        if self.quick_gelu:
            kwargs["force_quick_gelu"] = True
        elif self.config.get("quick_gelu"):
            kwargs["quick_gelu"] = False
        # A model repo loads as a folder (local-dir:<snapshot>): config, weights and
        # tokenizer from the files fetched at the identity's commit, nothing else.
        name, weights = (weights, None) if self._weights_kind == "repo" else (self.arch, weights)
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, precision=_PRECISION[self.dtype], device=self.device,
            **kwargs)
        if "modal" not in self.towers and hasattr(model, "visual"):
            model.visual = torch.nn.Identity()  # text-only use: free the image tower
        elif "modal" in self.towers:
            got = {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in sorted(model.visual.preprocess_cfg.items())}
            if got != self.preprocess_cfg():
                raise RuntimeError(f"open_clip resolved preprocessing {got} for {self.arch!r}, but the "
                                   f"identity says {self.preprocess_cfg()}: bump embed_code_version")
        self._tokenizer = open_clip.get_tokenizer(name)
        self._preprocess = preprocess
        self._model = model.eval()

    def unload(self) -> None:
        self._model = self._tokenizer = self._preprocess = None

    # ---- encoding ----------------------------------------------------------------
    def _encode(self, tower: str, items: list[str], *, batch_size: int, progress: bool) -> np.ndarray:
        self._ensure_loaded()
        batch = self._text_batch if tower == "text" else self._image_batch
        return self._in_batches(tower, items, batch, batch_size=batch_size, progress=progress)

    def _text_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        tokens = self._tokenizer(texts).to(self.device)
        with torch.inference_mode():
            return self._model.encode_text(tokens, normalize=self.normalize).float().cpu().numpy()

    def _image_batch(self, paths: list[str]) -> np.ndarray:
        import torch

        pixels = torch.stack([self._preprocess(load_image(p)) for p in paths])
        pixels = pixels.to(self.device, dtype=torch_dtype(self.dtype))
        with torch.inference_mode():
            return self._model.encode_image(pixels, normalize=self.normalize).float().cpu().numpy()


def _preset(model: str, pretrained: str, modality: str, towers: Sequence[str] = ("text", "modal")):
    def factory(*, model: str = model, pretrained: str = pretrained, quick_gelu: bool | None = None,
                dtype: str = "float32", modality: str = modality, towers: Sequence[str] = towers,
                device: str = "auto", batch_size: int | None = None) -> OpenClipEncoder:
        return OpenClipEncoder(model=model, pretrained=pretrained, quick_gelu=quick_gelu, dtype=dtype,
                               modality=modality, towers=towers, device=device, batch_size=batch_size)

    return factory


CLIP_MODEL, CLIP_PRETRAINED = "ViT-H-14", "laion2b_s32b_b79k"
UNI3D_TEXT_MODEL, UNI3D_TEXT_PRETRAINED = "EVA02-E-14-plus", "laion2b_s9b_b144k"
REMOTECLIP_REPO = "chendelong/RemoteCLIP"

register_encoder("clip")(_preset(CLIP_MODEL, CLIP_PRETRAINED, "image"))
register_encoder("uni3d-text")(_preset(UNI3D_TEXT_MODEL, UNI3D_TEXT_PRETRAINED, "point", ("text",)))


@register_encoder("remoteclip")
def remoteclip(*, model: str = "ViT-L-14", checkpoint: str | None = None, revision: str | None = None,
               quick_gelu: bool | None = False, dtype: str = "float32", modality: str = "satellite",
               device: str = "auto", batch_size: int | None = None) -> OpenClipEncoder:
    """RemoteCLIP: `checkpoint` is a local file, else RemoteCLIP-{model}.pt from the hub repo.

    quick_gelu defaults to False because the RemoteCLIP README loads its checkpoints into
    `open_clip.create_model_and_transforms(model_name)`, whose configs use plain GELU.
    """
    if checkpoint is None:
        checkpoint = f"hf://{REMOTECLIP_REPO}/RemoteCLIP-{model}.pt" + (f"@{revision}" if revision else "")
    enc = OpenClipEncoder(model=model, pretrained=checkpoint, quick_gelu=quick_gelu, dtype=dtype,
                          modality=modality, device=device, batch_size=batch_size)
    enc.local_option = "checkpoint"
    return enc
