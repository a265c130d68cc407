"""The paper's five benchmarks: one table, read by the reference checkpoints, the dataset converters, the
evaluation script and the Space.

Dependency-free on purpose (no torch, no datasets), so any module may import it.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["BENCHMARKS", "BENCHMARK_NAMES", "normalize_benchmark_name"]

# key (as the reference repository names its folders), short name, imaging modality
_TABLE = (
    ("bus", "BUS", "breast ultrasound"),
    ("busi", "BUSI", "breast ultrasound"),
    ("glas", "GlaS", "colon histology"),
    ("ham10000", "HAM10000", "dermoscopy"),
    ("kvasir-instrument", "Kvasir-Instrument", "endoscopy tools"),
)

BENCHMARKS: Dict[str, str] = {key: f"{name} ({modality})" for key, name, modality in _TABLE}
"""Benchmark key -> display label, e.g. `"busi"` -> `"BUSI (breast ultrasound)"`, in the paper's order."""

BENCHMARK_NAMES: Dict[str, str] = {key: name for key, name, _ in _TABLE}
"""Benchmark key -> short name for titles and model cards, e.g. `"glas"` -> `"GlaS"`."""


def normalize_benchmark_name(name: object) -> str:
    """Map a benchmark key, short name or label (any case, `_` for `-`) to its key in `BENCHMARKS`.

    Args:
        name (`str`): e.g. `"Kvasir_Instrument"`, `"BUSI"` or `"GlaS (colon histology)"`.

    Returns:
        `str`: the key, e.g. `"kvasir-instrument"`.

    Raises:
        `ValueError`: when `name` names none of the benchmarks.

    Example:
        >>> normalize_benchmark_name("Kvasir_Instrument")
        'kvasir-instrument'
    """
    if isinstance(name, str):
        text = name.strip().lower().replace("_", "-")
        for key, label in BENCHMARKS.items():
            if text in (key, BENCHMARK_NAMES[key].lower(), label.lower()):
                return key
    raise ValueError(f"Unknown benchmark {name!r}. Choose one of: {', '.join(BENCHMARKS)} (case-insensitive).")
