"""GlaS (MICCAI 2015 Gland Segmentation Challenge): colon histology, gland instance labels.

Raw layout: ``train_N.bmp``, ``testA_N.bmp``, ``testB_N.bmp`` with instance-label maps ``*_anno.bmp``
(0 = background, 1..K = glands; foreground = label > 0), usually in ``Warwick QU Dataset (Released
2016_07_08)/`` with ``Grade.csv``. The `subset` column is ``train``/``testA``/``testB``; a ``grade``
column (benign/malignant, "grade (GlaS)" in Grade.csv) is added when Grade.csv is present.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePath
from typing import Optional, Sequence

from .common import BenchmarkConverter, FileRole, find_csv, metadata_from_csv, read_csv_columns
from .hub import DatasetCardInfo

logger = logging.getLogger(__name__)

__all__ = ["GlaSConverter"]

_RAW_NAME = re.compile(r"^(?P<subset>train|testA|testB)_(?P<number>\d+)(?P<anno>_anno)?$", re.IGNORECASE)
_SUBSETS = {"train": "train", "testa": "testA", "testb": "testB"}

CARD = DatasetCardInfo(
    pretty_name="GlaS (Gland Segmentation in Colon Histology), GMS split",
    license="other",
    license_name="glas-research-non-commercial",
    license_link="https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/",
    homepage="https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/",
    description=(
        "165 H&E-stained colon histology images (Warwick-QU) with gland annotations from the MICCAI 2015 GlaS "
        "challenge. Instance labels are merged into one foreground class (label > 0). The GMS split trains on "
        "the 85 `train` images and tests on `testA` (60) + `testB` (20); the `subset` column says which."
    ),
    source=(
        "Sirinukunwattana et al., *Medical Image Analysis* 35 (2017). Released for research; commercial use "
        "is not permitted. Check the terms on the challenge page before publishing a copy."
    ),
    citation="""@article{sirinukunwattana2017glas,
  title   = {Gland segmentation in colon histology images: The GlaS challenge contest},
  author  = {Sirinukunwattana, Korsuk and Pluim, Josien P. W. and Chen, Hao and others},
  journal = {Medical Image Analysis},
  volume  = {35},
  pages   = {489--502},
  year    = {2017},
  doi     = {10.1016/j.media.2016.08.008}
}""",
    tags=("medical", "histology", "colon", "gland-segmentation"),
)


class GlaSConverter(BenchmarkConverter):
    """GlaS: ``testA_3.bmp`` + ``testA_3_anno.bmp`` -> ``testA_3``; foreground = instance label > 0."""

    dataset = "glas"
    display_name = "GlaS"
    card = CARD
    layout = "train_N.bmp / testA_N.bmp / testB_N.bmp with *_anno.bmp"
    mask_rule = "nonzero"

    def classify_name(self, rel_path: PurePath) -> Optional[FileRole]:
        match = _RAW_NAME.match(rel_path.stem)
        if match is None:
            return None
        name = f"{_SUBSETS[match['subset'].lower()]}_{int(match['number'])}"
        return FileRole("mask" if match["anno"] else "image", name)

    def collect_metadata(self, raw_dir: Path, names: Sequence[str]) -> dict[str, dict[str, Optional[str]]]:
        metadata = {name: {"subset": name.rsplit("_", 1)[0]} for name in names}
        grade_files = find_csv(raw_dir, r"^grade$")
        if not grade_files:
            logger.info("No Grade.csv under %s: the dataset gets no `grade` column", raw_dir)
            return metadata
        if len(grade_files) > 1:
            logger.warning("Several Grade.csv files, using %s", grade_files[0])
        table = read_csv_columns(grade_files[0], "name", {"grade": "grade (GlaS)"})
        grades = metadata_from_csv(names, table, ["grade"], grade_files[0])
        return {name: {**metadata[name], **grades[name]} for name in names}
