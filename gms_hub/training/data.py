"""The data of a training run: the train split, the evaluation splits and the class names.

A dataset is a folder or Hub repo written by `python -m gms_hub.data.prepare` (columns `image`, `mask`, `name`;
splits `train`, `validation`, `test`; `id2label.json` for multi-class data), or any Hub dataset with an image
and a mask column (`image_column` / `mask_column`, the naming of diffusers' example scripts). For the latter, the
split names it has are mapped (`valid`, `val`, `dev` -> `validation`; `testing` -> `test`; `training` -> `train`),
a `name` column is made from the row index when missing, and a seeded validation split is carved from train
(`gms_hub.data.carve_validation`) when it has none.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

logger = logging.getLogger(__name__)

#: Split names of other datasets, mapped to the gms_hub names.
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test",
}
#: Share of train carved into a validation split for datasets that have none (foreign datasets by default).
DEFAULT_VALIDATION_FRACTION = 0.1


def resolve_id2label(dataset: str, labels: Optional[Sequence[str]] = None, revision: Optional[str] = None) -> Optional[Dict[int, str]]:
    """The class names of a training run: from `labels` (foreground names in index order) or from the dataset.

    Args:
        dataset (`str`): Hub dataset id or local folder.
        labels (`Sequence[str]`, *optional*): foreground class names, e.g. `["benign", "malignant"]`; they win over
            the dataset's `id2label`, whose number of classes they must match when it has one.
        revision (`str`, *optional*): Hub revision of `dataset`.

    Returns:
        `dict[int, str]` or `None`: `{0: "background", 1: ..., K: ...}`; `None` for a binary dataset without names.

    Example:
        >>> resolve_id2label("outputs/synthetic-mc")
        {0: 'background', 1: 'class_1', 2: 'class_2'}
    """
    from ..data import load_id2label
    from ..data.loading import parse_id2label

    try:
        found = load_id2label(dataset, revision=revision)
    except (OSError, ValueError) as err:  # a foreign dataset may have no readable card
        logger.info("No id2label read from %s (%s).", dataset, err)
        found = None
    if not labels:
        return found
    names = [str(name).strip() for name in labels]
    id2label = parse_id2label({0: "background", **{index: name for index, name in enumerate(names, start=1)}})
    if found is not None and len(found) != len(id2label):
        raise ValueError(
            f"--labels names {len(names)} foreground classes ({names}) but {dataset} has {len(found) - 1} "
            f"({found}); give one name per class index 1..{len(found) - 1}."
        )
    return id2label


def _load_splits(dataset: str, revision: Optional[str], image_column: str, mask_column: str):
    """Every split of `dataset` as a dict `{gms split name: Dataset with image, mask, name}`, and whether the dataset
    is foreign (not in the gms_hub layout)."""
    from ..data import load_gms_dataset

    if (image_column, mask_column) == ("image", "mask"):
        try:
            return dict(load_gms_dataset(dataset, **({"revision": revision} if revision else {}))), False
        except ValueError as err:
            if "lacks the columns" not in str(err):
                raise
            logger.info("%s is not in the gms_hub layout (%s); reading its image and mask columns.", dataset, err)
    from datasets import load_dataset

    raw = load_dataset(dataset, revision=revision)
    splits = {}
    for split_name, split in raw.items():
        target = SPLIT_ALIASES.get(split_name.lower())
        if target is None:
            logger.warning("Split %r of %s is not train/validation/test; it is not used.", split_name, dataset)
            continue
        if target in splits:
            raise ValueError(f"{dataset} has two splits that map to {target!r}; keep one.")
        missing = [column for column in (image_column, mask_column) if column not in split.column_names]
        if missing:
            raise ValueError(
                f"{dataset} split {split_name!r} has no column {missing} (columns: {split.column_names}); pass "
                "--image_column and --mask_column with the names of its image and mask columns."
            )
        keep = [column for column in (image_column, mask_column, "name") if column in split.column_names]
        split = split.select_columns(keep)
        if "name" not in split.column_names:
            split = split.add_column("name", [f"{target}_{index}" for index in range(len(split))])
        split = split.rename_columns({old: new for old, new in ((image_column, "image"), (mask_column, "mask")) if old != new})
        splits[target] = split
    if "train" not in splits:
        raise ValueError(f"{dataset} has no train split (it has {sorted(raw)}).")
    return splits, True


def load_training_splits(
    dataset: str,
    *,
    select_on: str = "validation",
    revision: Optional[str] = None,
    seed: int = 2333,
    max_train_samples: Optional[int] = None,
    max_eval_samples: Optional[int] = None,
    image_column: str = "image",
    mask_column: str = "mask",
    validation_fraction: Optional[float] = None,
    context_slices: int = 0,
):
    """The train split and the evaluation splits (`validation`, `test`) of a dataset.

    The selection split must exist, or be carved: without a validation split, `validation_fraction` of train (by
    default 0.1 for a dataset not in the gms_hub layout, none for a gms_hub dataset, which has one) goes to a
    validation split chosen by `gms_hub.data.carve_validation` with `seed` (it depends only on the seed and the
    names). The other evaluation split is skipped with a warning when missing.

    Args:
        dataset (`str`): Hub dataset id or local folder (see [`~gms_hub.data.load_gms_dataset`]).
        select_on (`str`, defaults to `"validation"`): the model-selection split, `"validation"` or `"test"`.
        revision (`str`, *optional*): Hub revision of `dataset`.
        seed (`int`, defaults to 2333): seeds the validation carve-out and the shuffle of `max_train_samples`.
        max_train_samples (`int`, *optional*): keep this many training samples (debugging).
        max_eval_samples (`int`, *optional*): keep the first this many samples of each evaluation split.
        image_column (`str`, defaults to `"image"`) and mask_column (`str`, defaults to `"mask"`): the columns of a
            dataset not made by `prepare`.
        validation_fraction (`float`, *optional*): carve this share of train into validation when there is none.
        context_slices (`int`, defaults to 0): K of a 2.5D model: every split's images carry their neighbouring
            slices (`gms_hub.data.context.with_context_slices`), stacked before `max_*_samples` select rows so a
            kept slice still finds its neighbours. 0 leaves the splits as they are.

    Returns:
        `tuple`: the train split and a dict `{split name: split}` of the evaluation splits found.

    Example:
        >>> train_split, eval_splits = load_training_splits("org/gms-busi")
        >>> train_split, eval_splits = load_training_splits("user/scans", image_column="scan", mask_column="label")
    """
    splits, foreign = _load_splits(dataset, revision, image_column, mask_column)
    if "train" not in splits:
        raise ValueError(f"{dataset} has no 'train' split; it has {sorted(splits)}.")
    train_split = splits["train"]
    fraction = validation_fraction if validation_fraction is not None else (DEFAULT_VALIDATION_FRACTION if foreign else None)
    if "validation" not in splits and fraction is not None:
        from ..data import carve_validation

        names = [str(name) for name in train_split["name"]]
        if len(set(names)) != len(names):
            raise ValueError(f"{dataset}: the train split's names are not unique; the validation carve-out needs them.")
        _, validation_names = carve_validation(names, fraction=fraction, seed=seed)
        chosen = set(validation_names)
        splits["validation"] = train_split.select([i for i, name in enumerate(names) if name in chosen])
        train_split = train_split.select([i for i, name in enumerate(names) if name not in chosen])
        logger.info("Carved a validation split of %d from %d train samples (fraction %.3g, seed %d).",
                    len(chosen), len(names), fraction, seed)
    if context_slices:
        from ..data.context import with_context_slices

        train_split = with_context_slices(train_split, context_slices)
        splits = {name: with_context_slices(split, context_slices) if name != "train" else split
                  for name, split in splits.items()}
    if select_on not in splits:
        raise ValueError(
            f"{dataset} has no split {select_on!r}; it has {sorted(splits)}. Model selection needs the {select_on!r} "
            f"split (--select_on {select_on}); convert the dataset with gms_hub.data.prepare (it carves a validation "
            "split), pass --validation_fraction 0.1 to carve one from train, or pass --select_on test (the reference's "
            "choice)."
        )
    if max_train_samples is not None:
        train_split = train_split.shuffle(seed=seed).select(range(min(max_train_samples, len(train_split))))
    eval_splits = {}
    for split in ("validation", "test"):
        if split not in splits:
            logger.warning(f"No {split!r} split in {dataset}; it is not evaluated.")
            continue
        split_dataset = splits[split]
        if max_eval_samples is not None:
            split_dataset = split_dataset.select(range(min(max_eval_samples, len(split_dataset))))
        eval_splits[split] = split_dataset
    return train_split, eval_splits
