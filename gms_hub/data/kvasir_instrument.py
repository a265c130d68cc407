"""Kvasir-Instrument (Jha et al. 2021): GI endoscopy images with tool masks.

Raw layout: ``kvasir-instrument/images/<id>.jpg`` with ``kvasir-instrument/masks/<id>.png`` (extract
``images.tar.gz`` and ``masks.tar.gz`` of the download first). Names are the file stems, e.g.
``ckcu8ty6z00003b5yzfaezbs5``.
"""

from __future__ import annotations

from .common import BenchmarkConverter
from .hub import DatasetCardInfo

__all__ = ["KvasirInstrumentConverter"]

CARD = DatasetCardInfo(
    pretty_name="Kvasir-Instrument (GI endoscopy tools), GMS split",
    license="other",
    license_name="kvasir-instrument-research-non-commercial",
    license_link="https://datasets.simula.no/kvasir-instrument/",
    homepage="https://datasets.simula.no/kvasir-instrument/",
    description=(
        "590 gastrointestinal endoscopy frames with masks of diagnostic and therapeutic tools (snares, "
        "balloons, biopsy forceps, ...). The GMS split trains on 472 images and tests on 118."
    ),
    source=(
        "Jha et al., MultiMedia Modeling (MMM) 2021, Simula. For research and educational use; check the "
        "terms on the dataset page before publishing a copy."
    ),
    citation="""@inproceedings{jha2021kvasirinstrument,
  title     = {Kvasir-Instrument: Diagnostic and therapeutic tool segmentation dataset in gastrointestinal endoscopy},
  author    = {Jha, Debesh and Ali, Sharib and Emanuelsen, Krister and Hicks, Steven A. and Thambawita, Vajira
               and Garcia-Ceja, Enrique and Riegler, Michael A. and de Lange, Thomas and Schmidt, Peter T.
               and Johansen, H{\\aa}vard D. and Johansen, Dag and Halvorsen, P{\\aa}l},
  booktitle = {MultiMedia Modeling (MMM)},
  pages     = {218--229},
  year      = {2021},
  doi       = {10.1007/978-3-030-67835-7_19}
}""",
    tags=("medical", "endoscopy", "instrument-segmentation"),
)


class KvasirInstrumentConverter(BenchmarkConverter):
    """Kvasir-Instrument: ``images/<id>.jpg`` + ``masks/<id>.png`` -> ``<id>``."""

    dataset = "kvasir-instrument"
    display_name = "Kvasir-Instrument"
    card = CARD
    layout = "images/<id>.jpg with masks/<id>.png"
