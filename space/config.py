"""Configuration of the Space's models: model names, the `GMS_MODELS` format, and the network probe.

`GMS_MODELS` (or the JSON config file, `app_models.json` in the repo) names a GMS repo per benchmark, and adds
models of any other name (`GMS_MODELS="my-model=org/repo"`): those get their own dropdown entry. `network_available` decides once, at startup, whether downloads may be attempted at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union
from urllib.parse import urlparse

from huggingface_hub import constants as hf_constants

from gms_hub.data.benchmarks import BENCHMARKS, normalize_benchmark_name

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARKS",
    "DEMO_BRAIN_LABEL",
    "DEMO_LABEL",
    "UnknownModelError",
    "load_model_config",
    "model_key",
    "network_available",
    "normalize_name",
    "parse_model_config",
]

DEMO_LABEL = "demo model trained on synthetic data"
DEMO_BRAIN_LABEL = "demo model trained on one brain MRI template (MNI ICBM152, grey/white matter on axial T1 slices)"
DEMO_BRAIN_FOLDER = "demo_brain"  # the folder name of gms_hub.DEMO_BRAIN_PATH, which `load_model("demo-brain")` loads


class UnknownModelError(ValueError):
    """A model name that is none of `BENCHMARKS` and none of the configured models."""


_CUSTOM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def model_key(name: object) -> str:
    """The key a configured model is stored under: a `BENCHMARKS` key, or a custom name in lower case.

    Benchmark names normalise as everywhere (key, label, any case, `_` for `-`); any other name must be 1-64
    letters, digits, `.`, `_` or `-` starting with a letter or digit (it becomes a dropdown entry and an API value).

    Raises:
        `ValueError`: for a name that cannot be a model name.

    Example:
        >>> model_key("BUSI"), model_key("My-Model")
        ('busi', 'my-model')
    """
    try:
        return normalize_benchmark_name(name)
    except ValueError:
        pass
    text = name.strip().lower() if isinstance(name, str) else ""
    if not _CUSTOM_NAME.match(text):
        raise ValueError(
            f"Model name {name!r} is not usable: use 1-64 letters, digits, '.', '_' or '-' (e.g. 'my-model=org/repo')."
        )
    return text


def normalize_name(name: object, custom: Iterable[str] = ()) -> str:
    """Map a model name to its key: a `BENCHMARKS` key (key, label, any case, `_` for `-`) or one of `custom`.

    Args:
        name (`str`): what the user or the API sent.
        custom (`Iterable[str]`, defaults to `()`): keys of the configured models beyond the benchmarks.

    Raises:
        `UnknownModelError`: when the name is none of them; the message lists the names available.

    Example:
        >>> normalize_name("Kvasir_Instrument"), normalize_name("My-Model", custom=["my-model"])
        ('kvasir-instrument', 'my-model')
    """
    custom = list(custom)
    try:
        return normalize_benchmark_name(name)
    except ValueError:
        pass
    if isinstance(name, str) and name.strip().lower() in custom:
        return name.strip().lower()
    available = ", ".join(list(BENCHMARKS) + [c for c in custom if c not in BENCHMARKS])
    raise UnknownModelError(f"Unknown model {name!r}. Choose one of: {available} (case-insensitive).")


def parse_model_config(text: Optional[str]) -> Dict[str, str]:
    """Parse `GMS_MODELS`: a JSON object or comma-separated `name=repo` pairs.

    Args:
        text (`str`, *optional*): e.g. `'{"busi": "org/gms-busi"}'` or `"busi=org/gms-busi@v1,bus=/models/gms-bus"`.
            Empty values (and JSON `null`) mean "not configured"; keys starting with `_` are comments.

    Returns:
        `dict[str, str]`: model key (`model_key`: a benchmark key or a custom name) -> repo id (optionally
        `@revision`) or local folder.

    Example:
        >>> parse_model_config("busi=org/gms-busi, GlaS=org/gms-glas@v2")
        {'busi': 'org/gms-busi', 'glas': 'org/gms-glas@v2'}
    """
    if text is None or not text.strip():
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"GMS_MODELS looks like JSON but does not parse: {err}. Example: '{{\"busi\": \"org/gms-busi\"}}'.") from None
        if not isinstance(raw, dict):
            raise ValueError(f"GMS_MODELS must be a JSON object of name -> repo id, got {type(raw).__name__}.")
        items = list(raw.items())
    else:
        items = []
        for part in text.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(
                    f"GMS_MODELS entry {part.strip()!r} is not name=repo. Example: 'busi=org/gms-busi,bus=org/gms-bus'."
                )
            key, _, value = part.partition("=")
            items.append((key, value))
    config: Dict[str, str] = {}
    for key, value in items:
        if str(key).startswith("_"):
            continue
        if value is not None and not isinstance(value, str):
            raise ValueError(f"GMS_MODELS value for {key!r} must be a repo id or folder, got {value!r}.")
        if value is None or not value.strip():
            continue
        config[model_key(str(key))] = value.strip()
    return config


def load_model_config(
    config_file: Union[None, str, os.PathLike] = None, env_value: Optional[str] = None
) -> Dict[str, str]:
    """The configured GMS repos: the config file (if it exists) overridden per key by `env_value` (`GMS_MODELS`).

    Example:
        >>> load_model_config("app_models.json", os.environ.get("GMS_MODELS"))
        {}
    """
    config: Dict[str, str] = {}
    if config_file is not None and Path(config_file).is_file():
        try:
            config.update(parse_model_config(Path(config_file).read_text()))
        except ValueError as err:
            raise ValueError(f"{config_file}: {err}") from None
    config.update(parse_model_config(env_value))
    return config


def network_available(timeout_s: float = 2.0, endpoint: Optional[str] = None) -> bool:
    """Decide once whether the Hub is reachable: `False` at once under `HF_HUB_OFFLINE`, else a TCP connect.

    The connect (DNS included) runs in a daemon thread so a black-holed network costs `timeout_s` at most.

    Args:
        timeout_s (`float`, defaults to 2.0): the longest this may take.
        endpoint (`str`, *optional*): URL to probe; defaults to `HF_ENDPOINT` or https://huggingface.co.

    Returns:
        `bool`: whether a connection could be opened in time.

    Example:
        >>> network_available(timeout_s=0.5)
        False
    """
    if hf_constants.HF_HUB_OFFLINE:
        logger.info("HF_HUB_OFFLINE is set: running offline.")
        return False
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    result: List[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="gms-network-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    online = bool(result and result[0])
    logger.info("Network probe of %s:%d: %s.", host, port, "online" if online else "offline")
    return online
