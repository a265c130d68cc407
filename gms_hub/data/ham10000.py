"""HAM10000 (Tschandl et al. 2018): dermoscopy, 10,015 images with lesion masks.

Raw layout (Harvard Dataverse): ``HAM10000_images_part_1/ISIC_0024306.jpg`` (and ``part_2``) with masks
``HAM10000_segmentations_lesion_tschandl/ISIC_0024306_segmentation.png``; images and masks may sit in any
folders. When ``HAM10000_metadata.csv`` is present, ``lesion_id`` and ``dx`` (diagnosis) columns are added.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePath
from typing import Optional, Sequence

from .common import BenchmarkConverter, FileRole, find_csv, metadata_from_csv, read_csv_columns
from .hub import DatasetCardInfo

logger = logging.getLogger(__name__)

__all__ = ["HAM10000Converter"]

_RAW_NAME = re.compile(r"^ISIC_(?P<number>\d+)(?P<mask>_segmentation)?$", re.IGNORECASE)

CARD = DatasetCardInfo(
    pretty_name="HAM10000 (dermoscopic lesions), GMS split",
    license="cc-by-nc-sa-4.0",
    homepage="https://doi.org/10.7910/DVN/DBW86T",
    description=(
        "10,015 dermoscopic images of pigmented skin lesions (600x450 JPEG) with binary lesion masks. The GMS "
        "split trains on 8,015 images and tests on 2,000. `lesion_id` and `dx` (diagnosis) come from "
        "HAM10000_metadata.csv when it was present at conversion."
    ),
    source=(
        "Tschandl, Rosendahl and Kittler, *Scientific Data* 5 (2018); lesion masks by Tschandl et al. "
        "(2020). Licence CC BY-NC-SA 4.0: attribution, non-commercial, share-alike."
    ),
    citation="""@article{tschandl2018ham10000,
  title   = {The {HAM10000} dataset, a large collection of multi-source dermatoscopic images of common pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180161},
  year    = {2018},
  doi     = {10.1038/sdata.2018.161}
}""",
    tags=("medical", "dermoscopy", "skin-lesion", "lesion-segmentation"),
)


class HAM10000Converter(BenchmarkConverter):
    """HAM10000: ``ISIC_0024306.jpg`` + ``ISIC_0024306_segmentation.png`` -> ``ISIC_0024306``."""

    dataset = "ham10000"
    display_name = "HAM10000"
    card = CARD
    layout = "ISIC_*.jpg with ISIC_*_segmentation.png (any folders)"

    def classify_name(self, rel_path: PurePath) -> Optional[FileRole]:
        match = _RAW_NAME.match(rel_path.stem)
        if match is None:
            return None
        return FileRole("mask" if match["mask"] else "image", f"ISIC_{match['number']}")

    def collect_metadata(self, raw_dir: Path, names: Sequence[str]) -> dict[str, dict[str, Optional[str]]]:
        metadata_files = find_csv(raw_dir, r"metadata")
        if not metadata_files:
            logger.info("No HAM10000_metadata.csv under %s: the dataset gets no lesion_id/dx columns", raw_dir)
            return {name: {} for name in names}
        table, used = {}, []
        for path in metadata_files:
            try:
                table.update(read_csv_columns(path, "image_id", {"lesion_id": "lesion_id", "dx": "dx"}))
                used.append(path)
            except ValueError as err:  # another "metadata" table of the download: not ours
                logger.warning("Skipping %s: %s", path, err)
        if not used:
            return {name: {} for name in names}
        return metadata_from_csv(names, table, ["lesion_id", "dx"], used[0])
