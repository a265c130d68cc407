"""Reliability diagrams: the calibration bins of [`gms_hub.evaluation.calibration`] as a PNG (matplotlib, Agg)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Union

import numpy as np

logger = logging.getLogger(__name__)


def reliability_diagram(bin_stats: Dict[str, np.ndarray], path: Union[str, os.PathLike], title: str = "") -> Path:
    """Write a reliability diagram (observed foreground frequency vs predicted probability, per bin) as a PNG.

    Bars show each bin's observed frequency at its mean predicted probability; the diagonal is perfect
    calibration; a lower panel shows how many pixels fall in each bin (log scale). matplotlib (Agg, no display)
    is imported here only, so `import gms_hub` does not need it.

    Args:
        bin_stats (`dict`): from `calibration_bins` or `CalibrationAccumulator.bin_stats`.
        path (`str` or `os.PathLike`): the PNG file, or an existing folder to write `reliability.png` into.
        title (`str`, *optional*): figure title (the ECE is added when the stats allow it).

    Returns:
        `Path` of the written file.

    Example:
        >>> reliability_diagram(calibration_bins(probs, targets), "out/reliability.png")
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    missing = {"edges", "counts", "confidence", "frequency"} - set(bin_stats)
    if missing:
        raise ValueError(f"bin_stats lacks {sorted(missing)}; pass the dict of calibration_bins or "
                         "CalibrationAccumulator.bin_stats().")
    path = Path(path)
    if path.is_dir():
        path = path / "reliability.png"
    edges = np.asarray(bin_stats["edges"], np.float64)
    counts = np.asarray(bin_stats["counts"], np.int64)
    frequency = np.asarray(bin_stats["frequency"], np.float64)
    confidence = np.asarray(bin_stats["confidence"], np.float64)
    widths = np.diff(edges)
    filled = counts > 0
    total = counts.sum()
    ece = float(np.sum(counts[filled] / total * np.abs(frequency[filled] - confidence[filled]))) if total else None

    figure = Figure(figsize=(5.0, 6.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(edges[:-1][filled], frequency[filled], width=widths[filled], align="edge", color="#4c72b0",
            edgecolor="white", label="observed frequency")
    top.plot(confidence[filled], frequency[filled], "o", color="#dd8452", markersize=4, label="bin mean probability")
    top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("observed foreground frequency")
    top.legend(loc="upper left", fontsize=8)
    heading = title or "Reliability diagram"
    top.set_title(f"{heading} (ECE {ece:.4f})" if ece is not None else heading, fontsize=10)
    bottom.bar(edges[:-1], np.maximum(counts, 0), width=widths, align="edge", color="#8c8c8c", edgecolor="white")
    if filled.any():
        bottom.set_yscale("log")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("predicted foreground probability")
    bottom.set_ylabel("pixels")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    logger.info("Wrote the reliability diagram to %s", path)
    return path
