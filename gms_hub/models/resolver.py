"""Which model a string names, decided in one place: `classify_spec`, and `load_model` that loads it.

Every front door (the predict and convert CLIs, `train/evaluate.py`, the Space's model registry) passes the
user's string here, so `"busi"`, `"org/gms-busi@v1"`, `"ckpt/best_model.pth"` or `"demo"` mean the same
everywhere.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from huggingface_hub import constants as hf_constants

from .. import DEMO_BRAIN_PATH, DEMO_MODEL_PATH
from .reference import REFERENCE_NAMES

if TYPE_CHECKING:
    import torch

    from .gms import GMS

logger = logging.getLogger(__name__)

__all__ = ["ACCEPTED_FORMS", "KINDS", "ModelSpec", "classify_spec", "load_model"]

ACCEPTED_FORMS = (
    "'demo' (the bundled offline demo model), 'demo-brain' (the bundled grey/white matter model for T1 brain "
    "slices), a reference name (" + ", ".join(REFERENCE_NAMES) + "; any case), "
    "a .pth checkpoint path or an http(s) URL to one, a local GMS folder (with config.json), or a Hub repo id "
    "with an optional @revision (e.g. org/gms-busi@main)"
)
"""The model specs `load_model` accepts, for error messages and `--help` texts."""

KINDS = ("demo", "reference", "pth", "url", "local", "hub")
"""What a spec can name: the demo model, a reference checkpoint by name, a `.pth` file, a `.pth` URL, a local
GMS folder, or a Hub repo."""

# Hub download arguments of `from_pretrained`; for reference checkpoints they apply to the VAE download.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token")


class ModelSpec(NamedTuple):
    """The decision `classify_spec` made: what kind of source, where, and (Hub only) which revision."""

    kind: str
    location: str
    revision: Optional[str] = None


def classify_spec(spec: Union[str, os.PathLike, ModelSpec]) -> ModelSpec:
    """Decide what a model string names, without loading anything (and without network).

    In order: an existing folder is a local GMS folder and an existing `.pth` file a reference checkpoint (a
    path wins over a name it shares, and keeps any `@`); then `"demo"`, a reference name, an http(s) URL, and
    finally a Hub repo id with an optional `@revision`.

    Args:
        spec (`str`, `os.PathLike` or `ModelSpec`): see `ACCEPTED_FORMS`; a `ModelSpec` is returned unchanged.

    Returns:
        `ModelSpec`: `(kind, location, revision)` with `kind` one of `KINDS`.

    Raises:
        `ValueError`: for anything that is none of the accepted forms (the message lists them);
        `FileNotFoundError`: for a `.pth` path that does not exist.

    Example:
        >>> classify_spec("org/gms-busi@v1")
        ModelSpec(kind='hub', location='org/gms-busi', revision='v1')
        >>> classify_spec("BUSI")
        ModelSpec(kind='reference', location='busi', revision=None)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if isinstance(spec, ModelSpec):
        if spec.kind not in KINDS:
            raise ValueError(f"ModelSpec kind must be one of {KINDS}, got {spec.kind!r}.")
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise ValueError(f"A model spec must be a string, got {type(spec).__name__} {spec!r:.80}. Accepted: {ACCEPTED_FORMS}.")
    if not spec.strip():
        raise ValueError(f"The model spec is empty. Accepted: {ACCEPTED_FORMS}.")

    if os.path.isdir(spec):
        return ModelSpec("local", spec)
    if os.path.isfile(spec):
        if spec.lower().endswith(".pth"):
            return ModelSpec("pth", spec)
        hint = " Pass the folder that holds it." if os.path.basename(spec) == "config.json" else ""
        raise ValueError(
            f"{spec!r} is a file but not a .pth checkpoint; a GMS is loaded from a folder (or Hub repo) with "
            f"config.json.{hint} Accepted: {ACCEPTED_FORMS}."
        )

    text = spec.strip()
    lower = text.lower()
    if lower == "demo":
        return ModelSpec("demo", str(DEMO_MODEL_PATH))
    if lower == "demo-brain":
        return ModelSpec("demo", str(DEMO_BRAIN_PATH))
    if lower in REFERENCE_NAMES:
        return ModelSpec("reference", lower)
    if re.match(r"^https?://", text, flags=re.IGNORECASE):
        return ModelSpec("url", text)
    if lower.endswith(".pth"):
        raise FileNotFoundError(f"No checkpoint file at {spec!r} (resolved from {os.getcwd()}).")

    repo_id, at, revision = text.rpartition("@") if "@" in text else (text, "", "")
    if at and not revision:
        raise ValueError(f"{spec!r} ends with '@' but names no revision; write org/name@revision or drop the '@'.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"{spec!r} is no existing file or folder, and not a valid Hub repo id either ({err}). "
            f"Accepted: {ACCEPTED_FORMS}."
        ) from None
    return ModelSpec("hub", repo_id, revision or None)


def _is_cache_miss(err: BaseException) -> bool:
    """Whether `err` comes from a file missing in the Hub cache while downloads are off."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LocalEntryNotFoundError):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def load_model(
    spec: Union[str, os.PathLike, ModelSpec],
    *,
    device: Union[None, str, "torch.device"] = None,
    torch_dtype: Optional["torch.dtype"] = None,
    **kwargs: Any,
) -> "GMS":
    """Load the GMS that `spec` names: the demo model, a reference checkpoint, a `.pth`, a folder or a Hub repo.

    Args:
        spec (`str`, `os.PathLike` or `ModelSpec`): `"demo"`, `"demo-brain"`, a reference name (`bus`, `busi`, `glas`, `ham10000`,
            `kvasir-instrument`), a `.pth` path or URL, a local GMS folder, or a Hub id with optional `@revision`.
        device (`str` or `torch.device`, *optional*): where to put the model (default: CPU).
        torch_dtype (`torch.dtype`, *optional*): dtype of the model (default: float32).
        kwargs: passed on to `GMS.from_pretrained` (folders, Hub ids, the demo model: `revision`,
            `local_files_only`, `cache_dir`, `token`, `vae`, `threshold`, ...) or `GMS.from_reference_checkpoint`
            (checkpoints: `vae`, `vae_subfolder`, `image_size`, `threshold`, ...; there `local_files_only`,
            `cache_dir`, `token` and `force_download` apply to the VAE download, and `local_files_only` also
            forbids downloading the checkpoint).

    Returns:
        `GMS`: in eval mode.

    Raises:
        `ValueError`: for a spec of none of the accepted forms, or a `revision` that contradicts it;
        `FileNotFoundError`: for a missing `.pth` or a folder without `config.json`.

    Example:
        >>> model = load_model("demo")
        >>> model = load_model("busi", vae="path/to/sd2-vae", vae_subfolder=None)
        >>> model = load_model("org/gms-busi@v1", device="cuda", torch_dtype=torch.float16)
    """
    from .gms import GMS
    from .reference import resolve_checkpoint

    kind, location, revision = classify_spec(spec)
    given_revision = kwargs.pop("revision", None)
    if given_revision is not None:
        if kind != "hub":
            raise ValueError(f"revision={given_revision!r} applies to Hub repo ids only, but {spec!r} is a {kind} model.")
        if revision is not None and revision != given_revision:
            raise ValueError(f"{spec!r} names revision {revision!r} but revision={given_revision!r} was passed too.")
        revision = given_revision

    logger.info("Loading GMS from %s %s%s", kind, location, f"@{revision}" if revision else "")
    if kind in ("demo", "local"):
        if not (Path(location) / "config.json").is_file():
            raise FileNotFoundError(
                f"The folder {location} has no config.json, so it is not a GMS folder (those are written by "
                "GMS.save_pretrained). Accepted: " + ACCEPTED_FORMS + "."
            )
        model = GMS.from_pretrained(location, **kwargs)
    elif kind == "hub":
        try:
            model = GMS.from_pretrained(location, revision=revision, **kwargs)
        except Exception as err:
            if not _is_cache_miss(err):
                raise
            where = location + (f"@{revision}" if revision else "")
            reason = "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else "local_files_only=True"
            raise FileNotFoundError(
                f"{where} is not in the local Hub cache and {reason}, so it cannot be downloaded. Download it once "
                "with network, or pass a local folder (e.g. 'demo' for the bundled demo model)."
            ) from err
    else:  # "reference", "pth", "url": the paper's released checkpoints
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        vae = kwargs.get("vae")
        if hub_kwargs and (vae is None or (isinstance(vae, (str, os.PathLike)) and not os.path.exists(vae))):
            kwargs["vae_kwargs"] = {**hub_kwargs, **(kwargs.get("vae_kwargs") or {})}
        path = resolve_checkpoint(location, local_files_only=bool(hub_kwargs.get("local_files_only")))
        model = GMS.from_reference_checkpoint(path, **kwargs)
    if device is not None or torch_dtype is not None:
        model.to(device=device, dtype=torch_dtype)
    return model.eval()
