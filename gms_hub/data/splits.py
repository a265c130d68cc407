"""The paper's train/test name lists, and the seeded validation carve-out.

The GMS reference repository publishes one pickle per benchmark,
``{"train": {"name_list": [...]}, "test": {"name_list": [...]}}``. This module reads those pickles (from
the default URL, a local file or any URL) with an unpickler that can only build dicts, lists and strings,
or the same lists as JSON (``{"train": [...], "test": [...]}``), and carves a deterministic validation split
out of the train list.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from huggingface_hub import constants as hf_constants

from .benchmarks import BENCHMARKS

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SPLIT_URL",
    "SplitLists",
    "carve_validation",
    "default_split_url",
    "load_split_lists",
    "restricted_pickle_loads",
]

DEFAULT_SPLIT_URL = "https://raw.githubusercontent.com/King-HAW/GMS/main/Dataset/{dataset}/{file}_train_test_names.pkl"
"""Where the reference repository publishes each benchmark's split pickle."""

# The reference repository names the Kvasir-Instrument pickle after "kvasir"; every other file after its folder.
_SPLIT_FILE_STEMS = {"kvasir-instrument": "kvasir"}


def default_split_url(dataset: str) -> str:
    """URL of the paper's published split pickle for `dataset`.

    Args:
        dataset (`str`): a key of `gms_hub.data.benchmarks.BENCHMARKS` (``busi``, ``kvasir-instrument``, ...).

    Returns:
        `str`: the raw GitHub URL of ``Dataset/<dataset>/<file>_train_test_names.pkl``.

    Example:
        >>> default_split_url("kvasir-instrument")
        'https://raw.githubusercontent.com/King-HAW/GMS/main/Dataset/kvasir-instrument/kvasir_train_test_names.pkl'
    """
    if dataset not in BENCHMARKS:
        raise ValueError(
            f"The paper publishes split lists for {', '.join(BENCHMARKS)}, not {dataset!r}; pass your own split list."
        )
    return DEFAULT_SPLIT_URL.format(dataset=dataset, file=_SPLIT_FILE_STEMS.get(dataset, dataset))


@dataclass(frozen=True)
class SplitLists:
    """The paper's split of one benchmark.

    Args:
        train (`tuple[str, ...]`): train names, in the order of the source.
        test (`tuple[str, ...]`): test names, in the order of the source.
        source (`str`): the path or URL the lists were read from.
        sha256 (`str`): hex digest of the source file's bytes, recorded in dataset cards.
    """

    train: tuple[str, ...]
    test: tuple[str, ...]
    source: str
    sha256: str


class _NamesUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global, so nothing but built-in containers and scalars can be built.

    A plain pickle of dicts, lists and strings uses only opcodes that need no global lookup; every route to
    running code (``GLOBAL``/``STACK_GLOBAL``, ``REDUCE`` on a looked-up callable, ``INST``/``OBJ``,
    extension codes) goes through `find_class`, and persistent ids through `persistent_load`.
    """

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"Refusing to load global {module}.{name} from a split list: only dicts, lists and strings are "
            "allowed. The file is not a plain split pickle; pass a JSON split list instead."
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("Refusing a persistent id in a split list: only dicts, lists and strings are allowed.")


def _check_plain(obj, where: str = "the pickle") -> None:
    """Raise unless `obj` is made only of dicts with string keys, lists and strings."""
    if isinstance(obj, str):
        return
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f"{where} has a key of type {type(key).__name__}; only strings are allowed.")
            _check_plain(value, f"{where}[{key!r}]")
        return
    raise pickle.UnpicklingError(
        f"{where} holds a {type(obj).__name__}; a split pickle may hold only dicts, lists and strings."
    )


def restricted_pickle_loads(data: bytes):
    """Unpickle `data`, admitting only dicts (string keys), lists and strings.

    Args:
        data (`bytes`): the pickle.

    Returns:
        The unpickled object.

    Raises:
        `pickle.UnpicklingError`: if the pickle refers to any global (class, function, module) or builds
        anything other than dicts, lists and strings.

    Example:
        >>> restricted_pickle_loads(pickle.dumps({"train": {"name_list": ["a"]}}))
        {'train': {'name_list': ['a']}}
    """
    obj = _NamesUnpickler(io.BytesIO(data)).load()
    _check_plain(obj)
    return obj


def _fetch(url: str, timeout: float) -> bytes:
    """Download `url` through huggingface_hub's HTTP session, with a clear error when offline."""
    hint = (
        "Pass --splits (Python: `splits=`) with a local copy of the split list (.pkl from the GMS repository, "
        'or .json as {"train": [...], "test": [...]}).'
    )
    if hf_constants.HF_HUB_OFFLINE:
        raise ConnectionError(f"Cannot download the split list {url}: HF_HUB_OFFLINE is set. {hint}")
    from huggingface_hub.utils import get_session

    try:
        response = get_session().get(url, timeout=timeout, follow_redirects=True)
    except Exception as err:  # the session's transport errors differ between huggingface_hub versions
        raise ConnectionError(f"Cannot download the split list {url} ({type(err).__name__}: {err}). {hint}") from err
    if response.status_code != 200:
        raise ConnectionError(f"Cannot download the split list {url}: HTTP {response.status_code}. {hint}")
    return response.content


def _as_names(value, key: str, source: str) -> tuple[str, ...]:
    if isinstance(value, Mapping) and "name_list" in value:
        value = value["name_list"]
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError(
            f"Split list {source}: expected {key!r} to be a list of names (or {{'name_list': [...]}}), "
            f"got {type(value).__name__}."
        )
    duplicates = sorted(name for name, count in Counter(value).items() if count > 1)
    if duplicates:
        raise ValueError(
            f"Split list {source}: duplicate name in {key!r}: {_preview(duplicates)}. Every name must appear once."
        )
    return tuple(value)


def _preview(names: Sequence[str], limit: int = 20) -> str:
    """``"a, b, c"`` or ``"a, b, ... (first 20 of 31)"``."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... (first {limit} of {len(names)})"


def load_split_lists(
    splits: Optional[str | os.PathLike] = None,
    dataset: Optional[str] = None,
    timeout: float = 30.0,
) -> SplitLists:
    """Read a benchmark's train/test name lists.

    Args:
        splits (`str` or `os.PathLike`, *optional*): a local ``.pkl`` / ``.json`` file or an http(s) URL of
            one. Defaults to the paper's pickle for `dataset` (`default_split_url`).
        dataset (`str`, *optional*): benchmark name, needed when `splits` is not given.
        timeout (`float`, defaults to 30): seconds before a download gives up.

    Returns:
        `SplitLists`: train and test names, the source and its sha256.

    Raises:
        `ConnectionError`: the URL cannot be fetched (offline: pass a local file).
        `FileNotFoundError`: the local file does not exist.
        `ValueError`: the content is not ``{"train": [...], "test": [...]}`` (or the pickle's
            ``{"train": {"name_list": [...]}, ...}``), a list repeats a name, or train and test overlap.
        `pickle.UnpicklingError`: the pickle holds anything but dicts, lists and strings.

    Example:
        >>> lists = load_split_lists("busi_train_test_names.pkl")
        >>> len(lists.train), len(lists.test)
        (517, 130)
    """
    if splits is None:
        if dataset is None:
            raise ValueError("Pass `splits` (a .pkl/.json path or URL) or `dataset` to use the paper's default URL.")
        splits = default_split_url(dataset)
    source = os.fspath(splits)
    if source.startswith(("http://", "https://")):
        data = _fetch(source, timeout)
        suffix = Path(source.split("?", 1)[0]).suffix.lower()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Split list {source} does not exist; expected a .pkl or .json file.")
        data = path.read_bytes()
        suffix = path.suffix.lower()

    if suffix == ".json":
        try:
            content = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"Split list {source} is not valid JSON: {err}.") from err
    elif suffix in (".pkl", ".pickle"):
        content = restricted_pickle_loads(data)
    else:
        raise ValueError(f"Split list {source}: expected a .pkl, .pickle or .json file, got suffix {suffix!r}.")

    if not isinstance(content, Mapping) or not {"train", "test"} <= set(content):
        keys = sorted(content) if isinstance(content, Mapping) else type(content).__name__
        raise ValueError(f"Split list {source}: expected the keys 'train' and 'test', got {keys}.")
    train = _as_names(content["train"], "train", source)
    test = _as_names(content["test"], "test", source)
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(f"Split list {source}: names in both train and test: {_preview(overlap)}.")
    logger.info("Read split list %s: %d train, %d test names", source, len(train), len(test))
    return SplitLists(train=train, test=test, source=source, sha256=hashlib.sha256(data).hexdigest())


def _rank(name: str, seed: int) -> str:
    # A hash of (seed, name) orders the names: the carve-out is then independent of the list order,
    # Python/numpy versions and platforms, and adding a name does not reshuffle the others.
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8")).hexdigest()


def _allocate(group_sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Split `total` over groups proportionally to their sizes (largest remainder, ties by group name)."""
    size = sum(group_sizes.values())
    exact = {group: total * n / size for group, n in group_sizes.items()}
    counts = {group: math.floor(value) for group, value in exact.items()}
    order = sorted(group_sizes, key=lambda group: (-(exact[group] - counts[group]), str(group)))
    for group in order[: total - sum(counts.values())]:
        counts[group] += 1
    return counts


def carve_validation(
    train_names: Sequence[str],
    fraction: float = 0.1,
    seed: int = 2333,
    labels: Optional[Mapping[str, str]] = None,
) -> tuple[list[str], list[str]]:
    """Split the paper's train list into train and validation, deterministically.

    ``round(fraction * N)`` names (at least one when N > 1) go to validation. With `labels`, each label gets
    its proportional share (largest remainder), so validation keeps the label balance of train. Within a
    group, names are ranked by ``sha256(f"{seed}:{name}")``: the result depends only on the seed and the set
    of names. Both outputs keep the order of `train_names`.

    Args:
        train_names (`Sequence[str]`): the paper's train names.
        fraction (`float`, defaults to 0.1): share of names for validation, in (0, 1).
        seed (`int`, defaults to 2333): seed of the ranking.
        labels (`Mapping[str, str]`, *optional*): label per name, to stratify by.

    Returns:
        `tuple[list[str], list[str]]`: ``(train, validation)``; together they are `train_names`.

    Example:
        >>> train, validation = carve_validation([f"n{i}" for i in range(20)], fraction=0.1, seed=0)
        >>> len(train), len(validation)
        (18, 2)
    """
    if not 0 < fraction < 1:
        raise ValueError(f"`fraction` must be in (0, 1), got {fraction}.")
    names = list(train_names)
    if len(names) < 2:
        raise ValueError(f"Need at least 2 train names to carve a validation split, got {len(names)}.")
    total = min(len(names) - 1, max(1, math.floor(fraction * len(names) + 0.5)))
    if labels is not None:
        missing = [name for name in names if name not in labels]
        if missing:
            raise ValueError(f"No label for {len(missing)} train names: {_preview(missing)}.")
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(str(labels[name]), []).append(name)
    else:
        groups = {"": names}
    counts = _allocate({group: len(members) for group, members in groups.items()}, total)
    chosen: set[str] = set()
    for group, members in groups.items():
        chosen.update(sorted(members, key=lambda name: _rank(name, seed))[: counts[group]])
    train = [name for name in names if name not in chosen]
    validation = [name for name in names if name in chosen]
    return train, validation
