"""BUSI (Al-Dhabyani et al. 2020): breast ultrasound, benign and malignant lesions.

Raw layout: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/benign (1).png`` with ``benign (1)_mask.png``;
images with several lesions have extra masks ``benign (1)_mask_1.png``, ``_mask_2.png``, merged by union.
The paper's split names images ``benign_1`` and excludes ``normal``. The reference repository's
preprocessed ``images/benign_1.png`` + ``masks/benign_1.png`` layout is accepted too.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Optional, Sequence

from .common import BenchmarkConverter, FileRole
from .hub import DatasetCardInfo

__all__ = ["BUSIConverter"]

_RAW_NAME = re.compile(
    r"^(?P<label>benign|malignant|normal)\s*\((?P<number>\d+)\)(?P<mask>_mask(?:_(?P<part>\d+))?)?$", re.IGNORECASE
)

CARD = DatasetCardInfo(
    pretty_name="BUSI (Breast Ultrasound Images), GMS split",
    license="cc0-1.0",
    homepage="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
    description=(
        "Breast ultrasound images of women aged 25 to 75 (Baheya Hospital, Cairo, 2018) with lesion masks. "
        "The GMS split keeps the 647 benign and malignant images (the `normal` class has no lesion) and adds "
        "a `label` column (`benign`/`malignant`). Images with several lesions have their masks merged."
    ),
    source="Al-Dhabyani et al., *Data in Brief* 28 (2020), released under CC0 1.0 (public domain).",
    citation="""@article{aldhabyani2020busi,
  title   = {Dataset of breast ultrasound images},
  author  = {Al-Dhabyani, Walid and Gomaa, Mohammed and Khaled, Hussien and Fahmy, Aly},
  journal = {Data in Brief},
  volume  = {28},
  pages   = {104863},
  year    = {2020},
  doi     = {10.1016/j.dib.2019.104863}
}""",
    tags=("medical", "ultrasound", "breast", "lesion-segmentation"),
)


class BUSIConverter(BenchmarkConverter):
    """BUSI: ``benign (1).png`` -> ``benign_1``, masks ``_mask``, ``_mask_1``, ... merged; `label` column."""

    dataset = "busi"
    display_name = "BUSI"
    card = CARD
    layout = "Dataset_BUSI_with_GT/{benign,malignant}/benign (1).png with benign (1)_mask.png [, _mask_1.png ...]"
    stratify_by = "label"

    def classify_name(self, rel_path: PurePath) -> Optional[FileRole]:
        match = _RAW_NAME.match(rel_path.stem)
        if match is None:
            return None
        name = f"{match['label'].lower()}_{int(match['number'])}"
        if match["mask"]:
            return FileRole("mask", name, int(match["part"] or 0))
        return FileRole("image", name)

    def collect_metadata(self, raw_dir: Path, names: Sequence[str]) -> dict[str, dict[str, Optional[str]]]:
        return {name: {"label": name.rsplit("_", 1)[0]} for name in names}
