"""Slice-to-slice consistency of a volume's masks: how much the mask of slice k agrees with that of slice k + 1.

A 2D model segments every slice on its own, so its masks may flicker from one slice to the next where the anatomy
does not; a model that sees neighbouring slices (`context_slices`) should flicker less. The measure: for each pair
of adjacent slices in a split (slices k and k + 1 of one volume, both present: within a slab of the MNI dataset),
the per-class DSC between the two slices' masks (`per_class_dice_iou` of slice k against slice k + 1; NaN where
the class is in neither slice, left out of the means). The same is computed on the ground-truth labels: anatomy
changes between slices too, so the label's own adjacent-slice DSC is the reference, and a prediction should be as
consistent as the labels, not more (a model that predicts the same mask everywhere is perfectly "consistent").
`slice_consistency` reports the mean predicted and label adjacent-slice DSC per class and the mean absolute
difference between them over the pairs.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .metrics import per_class_dice_iou

logger = logging.getLogger(__name__)

__all__ = ["adjacent_slice_dice", "adjacent_slice_pairs", "slice_consistency"]


def adjacent_slice_pairs(names: Sequence[str]) -> List[Tuple[str, str]]:
    """The pairs `(slice k, slice k + 1)` of one volume among `names`, in volume and slice order.

    Names are parsed by `gms_hub.data.context.parse_slice_name` (`<volume>_slice<k>`, `<volume>_frame<k>`,
    `<volume>_<plane>_<k>`); a name that is not a slice name, or whose next slice is not among `names` (the end of
    a slab), starts no pair.

    Example:
        >>> adjacent_slice_pairs(["a_slice0", "a_slice1", "a_slice3", "a_slice4", "b_slice0", "us_1"])
        [('a_slice0', 'a_slice1'), ('a_slice3', 'a_slice4')]
    """
    from ..data.context import parse_slice_name

    where = {}
    for name in names:
        key = parse_slice_name(name)
        if key is not None:
            where[key] = name
    return [(where[(volume, index)], where[(volume, index + 1)])
            for volume, index in sorted(where) if (volume, index + 1) in where]


def adjacent_slice_dice(masks: Mapping[str, np.ndarray], pairs: Sequence[Tuple[str, str]], num_classes: int) -> np.ndarray:
    """Per-class DSC between the masks of each pair of adjacent slices.

    Args:
        masks (`Mapping[str, np.ndarray]`): label maps (H, W), integers 0..K (0 = background), by slice name.
        pairs (`Sequence[tuple[str, str]]`): from `adjacent_slice_pairs`.
        num_classes (`int`): K, the number of foreground classes.

    Returns:
        `np.ndarray` (pairs, K) float64: column k - 1 is class k, NaN where the class is in neither slice.

    Example:
        >>> masks = {"a_slice0": np.array([[1, 1], [0, 0]]), "a_slice1": np.array([[1, 0], [0, 0]])}
        >>> adjacent_slice_dice(masks, [("a_slice0", "a_slice1")], num_classes=1)
        array([[0.66666667]])
    """
    if not pairs:
        return np.zeros((0, num_classes))
    first = np.stack([np.asarray(masks[a]) for a, _ in pairs]).astype(np.int64)
    second = np.stack([np.asarray(masks[b]) for _, b in pairs]).astype(np.int64)
    dsc, _ = per_class_dice_iou(first, second, num_classes)
    return np.asarray(dsc, dtype=np.float64)


def slice_consistency(predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                      class_names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Adjacent-slice DSC of the predicted masks against the labels' own, per class.

    Args:
        predictions (`Mapping[str, np.ndarray]`): predicted label maps (H, W), 0..K, by slice name.
        labels (`Mapping[str, np.ndarray]`): ground-truth label maps of the same names and shapes.
        class_names (`Sequence[str]`): the K foreground classes' names, class 1 first.

    Returns:
        `dict`: per class `{"predicted": mean adjacent-slice DSC of the predictions, "label": the same of the
        labels, "abs_difference": mean over pairs of |predicted - label|, "pairs": pairs scored}`; means leave out
        pairs where the class is in neither slice (of the predictions, of the labels, or of either, respectively).

    Example:
        >>> slice_consistency(predicted, labels, ["grey_matter", "white_matter"])["grey_matter"]
        {'predicted': 0.91, 'label': 0.94, 'abs_difference': 0.04, 'pairs': 18}
    """
    missing = sorted(set(labels) ^ set(predictions))
    if missing:
        raise ValueError(f"Predictions and labels must name the same slices; {len(missing)} differ, e.g. {missing[:3]}.")
    pairs = adjacent_slice_pairs(sorted(labels))
    if not pairs:
        logger.warning("No two adjacent slices of one volume among %d names (e.g. %r); no consistency to measure.",
                       len(labels), next(iter(labels), None))
    predicted = adjacent_slice_dice(predictions, pairs, len(class_names))
    reference = adjacent_slice_dice(labels, pairs, len(class_names))
    result = {}
    for k, name in enumerate(class_names):
        p, r = predicted[:, k], reference[:, k]
        both = ~np.isnan(p) & ~np.isnan(r)
        result[name] = {
            "predicted": _mean(p[~np.isnan(p)]),
            "label": _mean(r[~np.isnan(r)]),
            "abs_difference": _mean(np.abs(p[both] - r[both])),
            "pairs": int(both.sum()),
        }
    return result


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")
