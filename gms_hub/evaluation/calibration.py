"""Calibration and uncertainty-quality metrics: ECE, Brier, error AUROC, Spearman.

One-shot functions take whole arrays; the accumulators take an evaluation batch by batch without storing
pixels, and give the same numbers (`CalibrationAccumulator` exactly, up to float summation order;
`ErrorAUROCAccumulator` up to a bound it reports). Everything is numpy; the picture of the bins is
[`gms_hub.evaluation.reliability`].
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "CALIBRATION_PROTOCOL",
    "DEFAULT_AUROC_BINS",
    "DEFAULT_ECE_BINS",
    "CalibrationAccumulator",
    "ErrorAUROCAccumulator",
    "average_ranks",
    "brier_score",
    "calibration_bins",
    "error_auroc",
    "expected_calibration_error",
    "spearman",
]

DEFAULT_ECE_BINS = 15
"""Equal-width probability bins of the ECE and the reliability diagram (the usual choice since Guo et al. 2017)."""

DEFAULT_AUROC_BINS = 4096
"""Histogram bins of uncertainty in (0, 1) for the streaming error AUROC: values in one bin count as tied (exact 0
and exact 1 have a bin each besides)."""

CALIBRATION_PROTOCOL = (
    "Calibration of the per-pixel foreground probability p at the model's resolution ({size}x{size}) against the "
    "protocol ground truth (0/1): {n_bins} equal-width bins over [0, 1] (bin i holds i/{n_bins} <= p < "
    "(i+1)/{n_bins}, the last bin includes 1); ECE = sum over bins of (pixels in bin / all pixels) * |observed "
    "foreground frequency - mean p|, over all pixels of the split; Brier = mean (p - y)^2 over all pixels; "
    "error_auroc = area under the ROC curve of the uncertainty map (normalised predictive entropy) ranking the "
    "wrong pixels (p > {threshold} differs from the ground truth) above the right ones, over all pixels of the "
    "split, ties counted as half (uncertainty histogram of {auroc_bins} equal-width bins over (0, 1) plus one bin "
    "each for exactly 0 and exactly 1; error_auroc_max_error is the largest possible difference from the exact "
    "pixel-level value); NaN when no pixel, or every pixel, is wrong; spearman = rank "
    "correlation (average ranks) between each image's mean uncertainty and its DSC."
)


def _to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"`{name}` must be a numpy array or torch tensor, got {type(value).__name__}.")


def _probabilities_and_targets(probs: ArrayLike, targets: ArrayLike):
    p = _to_numpy(probs, "probs").astype(np.float64).ravel()
    y = _to_numpy(targets, "targets")
    if tuple(np.shape(probs)) != tuple(y.shape):
        raise ValueError(f"`probs` and `targets` must have the same shape, got {tuple(np.shape(probs))} and {y.shape}.")
    y = y.ravel()
    if y.dtype != np.bool_:
        if y.size and not np.all((y == 0) | (y == 1)):
            raise ValueError("`targets` must be bool or hold only 0 and 1; threshold the ground truth first.")
        y = y.astype(bool)
    if p.size and not (np.all(p >= 0.0) and np.all(p <= 1.0)):
        raise ValueError(f"`probs` must lie in [0, 1], got values in [{np.nanmin(p)}, {np.nanmax(p)}] (or NaN).")
    return p, y


def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    # Equal-width bins over [0, 1]; 1.0 falls in the last bin.
    return np.minimum((values * n_bins).astype(np.int64), n_bins - 1)


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    return int(n_bins)


# ---------------------------------------------------------------------------------------------- one-shot


def calibration_bins(probs: ArrayLike, targets: ArrayLike, n_bins: int = DEFAULT_ECE_BINS) -> Dict[str, np.ndarray]:
    """Per-bin statistics of a reliability diagram (equal-width bins over [0, 1]).

    Args:
        probs (`np.ndarray` or `torch.Tensor`): foreground probabilities in [0, 1], any shape.
        targets (`np.ndarray` or `torch.Tensor`): ground truth of the same shape, bool or 0/1.
        n_bins (`int`, defaults to 15): number of bins.

    Returns:
        `dict` with `edges` (n_bins + 1,), `counts` (n_bins,) int64, `confidence` (mean probability per bin) and
        `frequency` (observed foreground frequency per bin), both NaN for empty bins.

    Example:
        >>> stats = calibration_bins(np.array([0.1, 0.9]), np.array([False, True]), n_bins=2)
        >>> stats["frequency"]
        array([0., 1.])
    """
    n_bins = _check_bins(n_bins)
    p, y = _probabilities_and_targets(probs, targets)
    index = _bin_index(p, n_bins)
    counts = np.zeros(n_bins, np.int64)
    confidence = np.full(n_bins, np.nan)
    frequency = np.full(n_bins, np.nan)
    for i in range(n_bins):
        inside = index == i
        counts[i] = np.count_nonzero(inside)
        if counts[i]:
            confidence[i] = p[inside].mean()
            frequency[i] = y[inside].mean()
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "counts": counts, "confidence": confidence,
            "frequency": frequency}


def expected_calibration_error(probs: ArrayLike, targets: ArrayLike, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """Expected calibration error of per-pixel foreground probabilities (`CALIBRATION_PROTOCOL`).

    ECE = sum over equal-width bins of (pixels in bin / pixels) * |observed foreground frequency - mean probability|.

    Args:
        probs (`np.ndarray` or `torch.Tensor`): foreground probabilities in [0, 1], any shape.
        targets (`np.ndarray` or `torch.Tensor`): ground truth of the same shape, bool or 0/1.
        n_bins (`int`, defaults to 15): number of bins.

    Returns:
        `float` in [0, 1]; NaN for empty inputs.

    Example:
        >>> expected_calibration_error(np.array([0.2, 0.2, 0.9]), np.array([0, 1, 1]))  # |0.5-0.2|*2/3 + |1-0.9|/3
        0.2333333333333333
    """
    stats = calibration_bins(probs, targets, n_bins)
    total = stats["counts"].sum()
    if total == 0:
        return float("nan")
    filled = stats["counts"] > 0
    gaps = np.abs(stats["frequency"][filled] - stats["confidence"][filled])
    return float(np.sum(stats["counts"][filled] / total * gaps))


def brier_score(probs: ArrayLike, targets: ArrayLike) -> float:
    """Mean squared difference between foreground probability and ground truth (0/1), over all pixels.

    Example:
        >>> brier_score(np.array([0.0, 0.5, 1.0]), np.array([0, 1, 1]))
        0.08333333333333333
    """
    p, y = _probabilities_and_targets(probs, targets)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def average_ranks(values: ArrayLike) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given the average of the ranks they span (float64).

    Example:
        >>> average_ranks(np.array([10, 20, 20, 5]))
        array([2. , 3.5, 3.5, 1. ])
    """
    x = _to_numpy(values, "values").ravel()
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)  # rank of the last member of each group of ties
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def error_auroc(uncertainty: ArrayLike, errors: ArrayLike) -> float:
    """AUROC of `uncertainty` ranking wrong pixels (`errors` True) above right ones, ties counted as half.

    It is the probability that a random wrong pixel is more uncertain than a random right one, computed from
    average ranks (Mann-Whitney U / (n_wrong * n_right)).

    Args:
        uncertainty (`np.ndarray` or `torch.Tensor`): uncertainty scores, any shape.
        errors (`np.ndarray` or `torch.Tensor`): bool (or 0/1), same shape: where the prediction is wrong.

    Returns:
        `float` in [0, 1] (0.5 = no better than chance); NaN when no pixel or every pixel is wrong (the ranking is
        undefined).

    Example:
        >>> error_auroc(np.array([0.9, 0.1, 0.5]), np.array([True, False, False]))
        1.0
    """
    u = _to_numpy(uncertainty, "uncertainty").astype(np.float64).ravel()
    e = _to_numpy(errors, "errors")
    if tuple(np.shape(uncertainty)) != tuple(e.shape):
        raise ValueError(f"`uncertainty` and `errors` must have the same shape, got {tuple(np.shape(uncertainty))} "
                         f"and {e.shape}.")
    e = e.ravel().astype(bool)
    wrong = int(np.count_nonzero(e))
    right = e.size - wrong
    if wrong == 0 or right == 0:
        return float("nan")
    ranks = average_ranks(u)
    u_statistic = ranks[e].sum() - wrong * (wrong + 1) / 2.0
    return float(u_statistic / (wrong * right))


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation: the Pearson correlation of average ranks (numpy only).

    Returns:
        `float` in [-1, 1]; NaN with fewer than 2 values or when either input is constant.

    Example:
        >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0]))
        0.5
    """
    a = _to_numpy(x, "x").astype(np.float64).ravel()
    b = _to_numpy(y, "y").astype(np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"spearman needs two arrays of the same length, got {a.size} and {b.size}.")
    if a.size < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(np.sum(ra * ra) * np.sum(rb * rb)))
    return float(np.sum(ra * rb) / denominator) if denominator > 0 else float("nan")


# ---------------------------------------------------------------------------------------------- streaming


class CalibrationAccumulator:
    """ECE, Brier and reliability-diagram statistics, added batch by batch (per-bin sums; no pixels stored).

    The result equals `expected_calibration_error` / `brier_score` / `calibration_bins` on all pixels at once, up
    to float64 summation order.

    Example:
        >>> acc = CalibrationAccumulator()
        >>> for probs, targets in batches:
        ...     acc.update(probs, targets)
        >>> acc.ece(), acc.brier()
    """

    def __init__(self, n_bins: int = DEFAULT_ECE_BINS):
        self.n_bins = _check_bins(n_bins)
        self.counts = np.zeros(self.n_bins, np.int64)
        self.probability_sums = np.zeros(self.n_bins, np.float64)
        self.target_sums = np.zeros(self.n_bins, np.float64)
        self.squared_error_sum = 0.0

    def update(self, probs: ArrayLike, targets: ArrayLike) -> None:
        """Add pixels: foreground probabilities in [0, 1] and their 0/1 ground truth, same shape."""
        p, y = _probabilities_and_targets(probs, targets)
        index = _bin_index(p, self.n_bins)
        self.counts += np.bincount(index, minlength=self.n_bins)
        self.probability_sums += np.bincount(index, weights=p, minlength=self.n_bins)
        self.target_sums += np.bincount(index, weights=y.astype(np.float64), minlength=self.n_bins)
        self.squared_error_sum += float(np.sum((p - y) ** 2))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def bin_stats(self) -> Dict[str, np.ndarray]:
        """The `calibration_bins` dict of everything added so far."""
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(self.counts > 0, self.probability_sums / self.counts, np.nan)
            frequency = np.where(self.counts > 0, self.target_sums / self.counts, np.nan)
        return {"edges": np.linspace(0.0, 1.0, self.n_bins + 1), "counts": self.counts.copy(),
                "confidence": confidence, "frequency": frequency}

    def ece(self) -> float:
        """Expected calibration error so far (NaN before any pixel)."""
        if self.total == 0:
            return float("nan")
        filled = self.counts > 0
        gaps = np.abs(self.target_sums[filled] - self.probability_sums[filled]) / self.counts[filled]
        return float(np.sum(self.counts[filled] / self.total * gaps))

    def brier(self) -> float:
        """Brier score so far (NaN before any pixel)."""
        return self.squared_error_sum / self.total if self.total else float("nan")

    def merge(self, other: "CalibrationAccumulator") -> "CalibrationAccumulator":
        """Add the pixels another accumulator saw (e.g. another process's shard); returns `self`.

        Example:
            >>> total = CalibrationAccumulator()
            >>> for shard in gather_object([acc]):  # one accumulator per process
            ...     total.merge(shard)
        """
        if not isinstance(other, CalibrationAccumulator) or other.n_bins != self.n_bins:
            raise ValueError(f"Can only merge a CalibrationAccumulator with n_bins={self.n_bins}, got {other!r}.")
        self.counts += other.counts
        self.probability_sums += other.probability_sums
        self.target_sums += other.target_sums
        self.squared_error_sum += other.squared_error_sum
        return self


class ErrorAUROCAccumulator:
    """Error AUROC added batch by batch, from a fixed histogram of uncertainty in [0, 1] split by right/wrong.

    Pixels are not stored: memory is `2 * (n_bins + 2)` counters whatever the split's size. Values exactly 0 and
    exactly 1 have bins of their own (a confident model puts most pixels at exactly 0: their ties are real ties);
    values inside (0, 1) fall in `n_bins` equal-width bins and values within one of those count as tied. So the
    result equals `error_auroc` on all pixels exactly when no bin mixes different values of a wrong and a right
    pixel (e.g. uncertainty quantised to the bins), and otherwise differs from it by at most `max_error()` (half
    the fraction of wrong/right pairs that share one of the equal-width bins).

    Example:
        >>> acc = ErrorAUROCAccumulator()
        >>> for uncertainty, errors in batches:
        ...     acc.update(uncertainty, errors)
        >>> acc.auroc(), acc.max_error()
    """

    def __init__(self, n_bins: int = DEFAULT_AUROC_BINS):
        self.n_bins = _check_bins(n_bins)
        # slot 0: exactly 0; slots 1..n_bins: the equal-width bins of (0, 1); slot n_bins + 1: exactly 1
        self.wrong = np.zeros(self.n_bins + 2, np.int64)
        self.right = np.zeros(self.n_bins + 2, np.int64)

    def update(self, uncertainty: ArrayLike, errors: ArrayLike) -> None:
        """Add pixels: uncertainty in [0, 1] and whether each pixel's prediction is wrong (bool), same shape."""
        u = _to_numpy(uncertainty, "uncertainty").astype(np.float64)
        e = _to_numpy(errors, "errors")
        if u.shape != e.shape:
            raise ValueError(f"`uncertainty` and `errors` must have the same shape, got {u.shape} and {e.shape}.")
        u, e = u.ravel(), e.ravel().astype(bool)
        if u.size and not (np.all(u >= 0.0) and np.all(u <= 1.0)):
            raise ValueError("`uncertainty` must lie in [0, 1] (e.g. gms_hub.inference.uncertainty.predictive_entropy).")
        index = np.where(u <= 0.0, 0, np.where(u >= 1.0, self.n_bins + 1, _bin_index(u, self.n_bins) + 1))
        self.wrong += np.bincount(index[e], minlength=self.n_bins + 2)
        self.right += np.bincount(index[~e], minlength=self.n_bins + 2)

    def _pairs(self) -> float:
        return float(self.wrong.sum()) * float(self.right.sum())

    def auroc(self) -> float:
        """AUROC so far; NaN while no pixel or every pixel is wrong."""
        pairs = self._pairs()
        if pairs == 0:
            return float("nan")
        right_below = np.cumsum(self.right) - self.right  # right pixels in lower bins
        wins = np.sum(self.wrong.astype(np.float64) * (right_below + 0.5 * self.right))
        return float(wins / pairs)

    def merge(self, other: "ErrorAUROCAccumulator") -> "ErrorAUROCAccumulator":
        """Add the pixels another accumulator saw (e.g. another process's shard); returns `self`. Exact: the
        histograms add."""
        if not isinstance(other, ErrorAUROCAccumulator) or other.n_bins != self.n_bins:
            raise ValueError(f"Can only merge an ErrorAUROCAccumulator with n_bins={self.n_bins}, got {other!r}.")
        self.wrong += other.wrong
        self.right += other.right
        return self

    def max_error(self) -> float:
        """Largest possible difference from the exact pixel-level AUROC (NaN while undefined)."""
        pairs = self._pairs()
        if pairs == 0:
            return float("nan")
        inside = slice(1, self.n_bins + 1)  # the exact-0 and exact-1 bins hold true ties only
        return float(0.5 * np.sum(self.wrong[inside].astype(np.float64) * self.right[inside]) / pairs)
