"""BUS (Yap et al. 2017, dataset B): breast ultrasound from the UDIAT centre, Sabadell.

Raw layout (as sent by the authors): ``BUS_Dataset_B/original/000001.png`` with the lesion mask
``BUS_Dataset_B/GT/000001.png``; ``images/`` + ``masks/`` folders are accepted as well. Names are the
six-digit stems, e.g. ``000001``.
"""

from __future__ import annotations

from .common import BenchmarkConverter
from .hub import DatasetCardInfo

__all__ = ["BUSConverter"]

CARD = DatasetCardInfo(
    pretty_name="BUS (breast ultrasound, dataset B), GMS split",
    license="other",
    license_name="bus-dataset-b-by-request",
    license_link="http://www2.docm.mmu.ac.uk/STAFF/M.Yap/dataset.php",
    homepage="http://www2.docm.mmu.ac.uk/STAFF/M.Yap/dataset.php",
    description=(
        "163 breast ultrasound images (UDIAT Diagnostic Centre, Sabadell, Spain) with lesion masks. The GMS "
        "split trains on 132 images and tests on 31."
    ),
    source=(
        "Yap et al., *IEEE Journal of Biomedical and Health Informatics* 22(4) (2018). Distributed by the "
        "authors on request, for research only: do not publish a copy; push it to a private repo."
    ),
    citation="""@article{yap2018bus,
  title   = {Automated breast ultrasound lesions detection using convolutional neural networks},
  author  = {Yap, Moi Hoon and Pons, Gerard and Mart{\\'\\i}, Joan and Ganau, Sergi and Sent{\\'\\i}s, Melcior
             and Zwiggelaar, Reyer and Davison, Adrian K. and Mart{\\'\\i}, Robert},
  journal = {IEEE Journal of Biomedical and Health Informatics},
  volume  = {22},
  number  = {4},
  pages   = {1218--1226},
  year    = {2018},
  doi     = {10.1109/JBHI.2017.2731873}
}""",
    tags=("medical", "ultrasound", "breast", "lesion-segmentation"),
)


class BUSConverter(BenchmarkConverter):
    """BUS dataset B: ``original/000001.png`` + ``GT/000001.png`` -> ``000001``."""

    dataset = "bus"
    display_name = "BUS"
    card = CARD
    layout = "original/<000001>.png with GT/<000001>.png (or images/ with masks/)"
