"""BUSI (Al-Dhabyani et al. 2020): breast ultrasound, benign and malignant lesions.

Raw layout: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/benign (1).png`` with ``benign (1)_mask.png``;
images with several lesions have extra masks ``benign (1)_mask_1.png``, ``_mask_2.png``, merged by union.
The paper's split names images ``benign_1`` and excludes ``normal``. The reference repository's
preprocessed ``images/benign_1.png`` + ``masks/benign_1.png`` layout is accepted too.
"""

from __future__ import annotations

import dataclasses
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


MULTICLASS_ID2LABEL = {0: "background", 1: "benign", 2: "malignant"}
"""Classes of ``prepare busi --multiclass``: the lesion type, from the folder each image comes from."""

MULTICLASS_CARD = dataclasses.replace(
    CARD,
    pretty_name="BUSI (Breast Ultrasound Images) with lesion type, GMS split",
    description=CARD.description
    + " In this multi-class version each lesion mask holds its lesion type (1 = benign, 2 = malignant), "
    "taken from the folder the image comes from; the split is the binary version's.",
)


class BUSIConverter(BenchmarkConverter):
    """BUSI: ``benign (1).png`` -> ``benign_1``, masks ``_mask``, ``_mask_1``, ... merged; `label` column.

    Args:
        multiclass (`bool`, defaults to `False`): write class-index masks (0 background, 1 benign,
            2 malignant, see `MULTICLASS_ID2LABEL`) instead of binary 0/255 masks. The split is the same.
    """

    dataset = "busi"
    display_name = "BUSI"
    card = CARD
    layout = "Dataset_BUSI_with_GT/{benign,malignant}/benign (1).png with benign (1)_mask.png [, _mask_1.png ...]"
    stratify_by = "label"

    def __init__(self, multiclass: bool = False):
        self.multiclass = multiclass
        if multiclass:
            self.card = MULTICLASS_CARD
            self.id2label = dict(MULTICLASS_ID2LABEL)

    def mask_value(self, example) -> int:
        if not self.multiclass:
            return 255
        label = example.metadata.get("label")
        by_name = {name: index for index, name in MULTICLASS_ID2LABEL.items() if index > 0}
        if label not in by_name:
            raise ValueError(
                f"BUSI example {example.name}: lesion type {label!r} is not one of {sorted(by_name)}; "
                "the multi-class version has benign and malignant lesions only."
            )
        return by_name[label]

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
