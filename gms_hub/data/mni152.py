"""Brain tissue on the MNI ICBM152 2009a template: one real, labelled MRI that installs with `nilearn`.

The wheel of `nilearn` ships the symmetric ICBM152 2009a template as three volumes in
``nilearn/datasets/data/``: ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` (T1-weighted, 197 x 233 x 189 at
1 mm, uint8, the average of 152 registered brains, skull stripped) and its grey- and white-matter probability maps
(``..._gm_...`` and ``..._wm_...``, uint8 0..255 for probability 0..1). This module turns them into a
`gms_hub.data` dataset folder of 2D slices:

- **Labels**: 0 background, 1 grey matter, 2 white matter. A pixel is grey matter where the grey-matter map is at
  least 50 % (value >= 128 of 255) and not below the white-matter map; white matter where the white-matter map is at
  least 50 % and above the grey-matter map (a tie goes to grey); background otherwise (CSF, outside the brain). At
  another size than the template's, the two maps are resampled (bilinear) first and the rule applied after, so thin
  grey matter is not lost to nearest-neighbour sampling of the labels.
- **Orientation** (the display convention of radiology viewers, shared by every slice written here): the volume is
  reoriented to the closest canonical RAS orientation (`nibabel.as_closest_canonical`), then each slice is turned
  so that axial slices have anterior up and the patient's right on the image's left (radiological convention),
  coronal slices superior up and right on the left, sagittal slices superior up and anterior on the left. The
  in-plane axes are cropped to the brain's bounding box over the whole volume (T1 > 0, plus ``margin`` voxels; the
  same box for every slice), so the brain fills the frame; each slice is then zero-padded to a square (centred) and
  resized to ``image_size``.
- **Slices**: only those where brain tissue (label 1 or 2) covers at least ``min_brain_fraction`` of the slice.
- **Splits by slab**: neighbouring 1 mm slices are nearly identical, so a random split would test on near-copies
  of training slices. Brain slices are cut into repeating cycles of ``train_slab`` training slices, a gap, a
  held-out slab of ``held_out_slab`` slices and another gap; held-out slabs alternate test, validation, test, ...
  Gap slices are dropped, so every test or validation slice is at least ``gap`` (>= 5) slices away from any
  training slice, and held-out slabs sample the whole brain rather than one end of it.

Each row records ``plane`` and ``slice_index`` (the index along the sliced axis of the RAS-reoriented volume).
This is one template, not a cohort: scores on its test slabs say how well a model reproduces this one brain's
tissue boundaries on slices it has not seen, not how it generalises to patients or scanners.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "MNI152_CARD",
    "MNI152_FILES",
    "MNI152_ID2LABEL",
    "PLANES",
    "find_mni152_files",
    "label_tissue",
    "make_mni152_dataset",
    "orient_slice",
    "slab_splits",
]

MNI152_FILES: dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
"""The three files of the template, as the nilearn wheel names them (``nilearn/datasets/data/``)."""

MNI152_ID2LABEL: dict[int, str] = {0: "background", 1: "grey_matter", 2: "white_matter"}
"""Class names of the masks (0 = background)."""

PLANES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
"""The axis of the RAS-reoriented volume each plane slices along."""

TISSUE_THRESHOLD = 128
"""50 % of the maps' 0..255 range: a tissue needs at least this much probability to be labelled."""

MIN_GAP = 5
"""The smallest number of slices allowed between a held-out slice and a training slice."""

MNI152_COPYRIGHT = (
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, "
    "McGill University. Permission to use, copy, modify, and distribute this software and its documentation for "
    "any purpose and without fee is hereby granted, provided that the above copyright notice appear in all copies. "
    "The authors and McGill University make no representations about the suitability of this software for any "
    "purpose. It is provided \"as is\" without express or implied warranty. The authors are not responsible for "
    "any data loss, equipment damage, property loss, or injury to subjects or patients resulting from the use or "
    "misuse of this software package."
)
"""The notice the ICBM 2009 templates are distributed with (it must travel with every copy)."""

MNI152_CITATION = """@article{fonov2011unbiased,
  title={Unbiased average age-appropriate atlases for pediatric studies},
  author={Fonov, Vladimir and Evans, Alan C and Botteron, Kelly and Almli, C Robert and McKinstry, Robert C and Collins, D Louis},
  journal={NeuroImage},
  volume={54},
  number={1},
  pages={313--327},
  year={2011}
}"""

MNI152_CARD: dict = {
    "pretty_name": "MNI ICBM152 2009a brain tissue slices",
    "license": "other",
    "license_name": "ICBM 2009 template licence (permissive, notice required)",
    "license_link": "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009",
    "homepage": "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009",
    "tags": ["medical", "mri", "brain", "segmentation"],
    "citation": MNI152_CITATION,
    "description": (
        "2D slices of **one template**, the symmetric MNI ICBM152 2009a T1-weighted average of 152 registered "
        "adult brains (1 mm, skull stripped), with grey and white matter labelled from the template's tissue "
        "probability maps. It is not a cohort of patients: every slice comes from the same smooth, noise-free "
        "average brain, so scores on its test slabs measure how well a model reproduces this brain's tissue "
        "boundaries on slices it has not seen, not how it does on real scans of patients.\n\n"
        "Labels: 0 background, 1 grey matter (grey-matter probability >= 50 % and not below white matter's), "
        "2 white matter (white-matter probability >= 50 % and above grey matter's). Slices are shown as radiology "
        "viewers show them (closest canonical RAS; axial: anterior up, the patient's right on the left; coronal: "
        "superior up, right on the left; sagittal: superior up, anterior on the left), cropped to the brain's "
        "bounding box and zero-padded to a square. "
        "Splits are contiguous slabs separated by gaps of dropped slices (see Provenance), so that neighbouring, "
        "near-identical slices never straddle training and test."
    ),
    "source": (
        "The files `mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz` shipped in the `nilearn` wheel "
        "(`nilearn/datasets/data/`), a copy of the ICBM 2009a nonlinear symmetric template of the McConnell "
        "Brain Imaging Centre (Fonov et al., 2009 and 2011).\n\n" + MNI152_COPYRIGHT
    ),
}
"""Dataset-card metadata of the converted template (keys of `gms_hub.data.hub.DatasetCardInfo`)."""


def find_mni152_files(source: Optional[str | os.PathLike] = None) -> dict[str, Path]:
    """The paths of the template's T1, grey- and white-matter files.

    Args:
        source (`str` or `os.PathLike`, *optional*): a folder holding the three files (`MNI152_FILES`); by default
            the data folder of the installed `nilearn`.

    Returns:
        `dict[str, Path]`: ``{"t1": ..., "gm": ..., "wm": ...}``.

    Raises:
        FileNotFoundError: no `source` and no `nilearn`, or a file is missing.

    Example:
        >>> files = find_mni152_files()  # needs `pip install nilearn`
        >>> files["t1"].name
        'mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz'
    """
    if source is None:
        try:
            import nilearn
        except ImportError as err:
            raise FileNotFoundError(
                "The MNI ICBM152 template comes with nilearn, which is not installed: run `pip install nilearn`, "
                "or pass --source DIR, a folder holding " + ", ".join(MNI152_FILES.values()) + "."
            ) from err
        folder = Path(nilearn.__file__).parent / "datasets" / "data"
        where = f"the installed nilearn ({folder})"
    else:
        folder = Path(source)
        where = f"--source {folder}"
    files = {key: folder / name for key, name in MNI152_FILES.items()}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{where} lacks {', '.join(missing)}: pass --source with a folder holding the three template files, or "
            "reinstall nilearn (`pip install --force-reinstall nilearn`)."
        )
    return files


def _load_ras(path: Path) -> np.ndarray:
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(image.dataobj, dtype=np.float32)


def orient_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice a RAS volume and turn the slice the way radiology viewers show it.

    Args:
        volume (`np.ndarray`): (X, Y, Z) array in RAS orientation (x to the patient's right, y anterior, z superior).
        plane (`str`): ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        index (`int`): index along the plane's axis (`PLANES`).

    Returns:
        `np.ndarray`: the 2D slice; axial (Y, X) anterior up and right on the left; coronal (Z, X) superior up and
        right on the left; sagittal (Z, Y) superior up and anterior on the left.
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}.")
    plane_slice = np.take(volume, index, axis=PLANES[plane])  # axial (X, Y), coronal (X, Z), sagittal (Y, Z)
    # Transposed, rows run along the second axis; both flips put anterior/superior up and right (or anterior) left.
    return plane_slice.T[::-1, ::-1]


def label_tissue(gm: np.ndarray, wm: np.ndarray, threshold: float = TISSUE_THRESHOLD) -> np.ndarray:
    """Labels from tissue probability maps: 1 grey matter, 2 white matter, 0 elsewhere (see the module docstring).

    Args:
        gm (`np.ndarray`): grey-matter probability, 0..255.
        wm (`np.ndarray`): white-matter probability, 0..255, same shape.
        threshold (`float`, defaults to 128): the least probability a tissue needs (128 = 50 %).

    Returns:
        `np.ndarray`: uint8 labels of the same shape.
    """
    labels = np.zeros(gm.shape, np.uint8)
    labels[(gm >= threshold) & (gm >= wm)] = 1
    labels[(wm >= threshold) & (wm > gm)] = 2
    return labels


def _square(array: np.ndarray) -> np.ndarray:
    """Zero-pad a 2D array to a square, centred."""
    height, width = array.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    out = np.zeros((side, side), array.dtype)
    out[top : top + height, left : left + width] = array
    return out


def _resize(array: np.ndarray, size: Optional[int]) -> np.ndarray:
    if size is None or array.shape[0] == size:
        return array
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


def slab_splits(num_slices: int, train_slab: int = 20, held_out_slab: int = 10, gap: int = MIN_GAP) -> dict[str, list[int]]:
    """Assign positions ``0..num_slices-1`` (consecutive slices) to train, validation and test slabs.

    The pattern ``train_slab`` train, ``gap`` dropped, ``held_out_slab`` held out, ``gap`` dropped repeats from the
    first slice; held-out slabs alternate test, validation, test, ... A last held-out slab too short to be useful
    (under half ``held_out_slab``) is dropped.

    Args:
        num_slices (`int`): how many consecutive slices.
        train_slab (`int`, defaults to 20): training slices per cycle.
        held_out_slab (`int`, defaults to 10): slices per test or validation slab.
        gap (`int`, defaults to 5): dropped slices on each side of a held-out slab (at least `MIN_GAP`).

    Returns:
        `dict[str, list[int]]`: positions per split (``train``, ``validation``, ``test``).

    Example:
        >>> splits = slab_splits(80, train_slab=20, held_out_slab=10, gap=5)
        >>> splits["test"][:3], splits["validation"][:3]
        ([25, 26, 27], [65, 66, 67])
    """
    if gap < MIN_GAP:
        raise ValueError(f"gap must be at least {MIN_GAP} slices (neighbouring slices are near copies), got {gap}.")
    if train_slab < 1 or held_out_slab < 1:
        raise ValueError(f"train_slab and held_out_slab must be >= 1, got {train_slab} and {held_out_slab}.")
    splits: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    cycle = train_slab + 2 * gap + held_out_slab
    held_out_names = ("test", "validation")
    for number, start in enumerate(range(0, num_slices, cycle)):
        splits["train"] += list(range(start, min(start + train_slab, num_slices)))
        held = list(range(start + train_slab + gap, min(start + train_slab + gap + held_out_slab, num_slices)))
        if len(held) * 2 >= held_out_slab:
            splits[held_out_names[number % 2]] += held
    return splits


@dataclass
class _Slice:
    index: int
    image: np.ndarray  # (S, S) uint8
    mask: np.ndarray  # (S, S) uint8 labels


def _brain_box(t1: np.ndarray, plane: str, margin: int) -> tuple:
    """Index that crops the in-plane axes to the bounding box of T1 > 0 (plus `margin`), keeping the plane's axis."""
    box = []
    for axis in range(3):
        if axis == PLANES[plane]:
            box.append(slice(None))
            continue
        inside = np.nonzero(t1.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        box.append(slice(max(int(inside[0]) - margin, 0), min(int(inside[-1]) + 1 + margin, t1.shape[axis])))
    return tuple(box)


def _brain_slices(
    files: dict[str, Path], plane: str, image_size: Optional[int], min_brain_fraction: float, margin: int
) -> list[_Slice]:
    t1, gm, wm = (_load_ras(files[key]) for key in ("t1", "gm", "wm"))
    if not t1.shape == gm.shape == wm.shape:
        raise ValueError(f"The template files differ in shape: t1 {t1.shape}, gm {gm.shape}, wm {wm.shape}.")
    if not t1.any():
        raise ValueError(f"The T1 volume {files['t1']} is all zeros; check the file.")
    box = _brain_box(t1, plane, margin)
    t1, gm, wm = t1[box], gm[box], wm[box]
    low, high = float(t1.min()), float(t1.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    slices = []
    for index in range(t1.shape[PLANES[plane]]):
        gm_slice, wm_slice = (_resize(_square(orient_slice(v, plane, index)), image_size) for v in (gm, wm))
        mask = label_tissue(gm_slice, wm_slice)
        if (mask > 0).mean() < min_brain_fraction:
            continue
        image = _resize(_square(orient_slice(t1, plane, index)), image_size)
        image = np.clip(np.rint((image - low) * scale), 0, 255).astype(np.uint8)
        slices.append(_Slice(index, image, mask))
    return slices


def make_mni152_dataset(
    source: Optional[str | os.PathLike] = None,
    plane: str = "axial",
    image_size: Optional[int] = 256,
    min_brain_fraction: float = 0.02,
    train_slab: int = 20,
    held_out_slab: int = 10,
    gap: int = MIN_GAP,
    margin: int = 4,
):
    """Slice the MNI ICBM152 template into a `datasets.DatasetDict` with slab splits.

    Args:
        source (`str` or `os.PathLike`, *optional*): folder of the three files (default: the installed nilearn).
        plane (`str`, defaults to ``"axial"``): ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        image_size (`int`, *optional*, defaults to 256): side of the square slices; `None` keeps the padded
            template size.
        min_brain_fraction (`float`, defaults to 0.02): least share of a slice that brain tissue must cover.
        train_slab (`int`, defaults to 20), held_out_slab (`int`, defaults to 10), gap (`int`, defaults to 5):
            the slab pattern of `slab_splits`, in slices.
        margin (`int`, defaults to 4): voxels kept around the brain's bounding box in the slice plane.

    Returns:
        `tuple[datasets.DatasetDict, dict]`: the splits (columns ``image`` (L), ``mask`` (labels 0..2), ``name``,
        ``plane``, ``slice_index``) and the provenance for the card (`slab_splits` settings, slice ranges).

    Example:
        >>> splits, provenance = make_mni152_dataset(plane="axial", image_size=128)
        >>> splits["test"][0]["plane"]
        'axial'
    """
    import datasets

    if image_size is not None and image_size < 32:
        raise ValueError(f"image_size must be at least 32 (or None for the template's size), got {image_size}.")
    files = find_mni152_files(source)
    slices = _brain_slices(files, plane, image_size, min_brain_fraction, margin)
    if not slices:
        raise ValueError(f"No {plane} slice has brain tissue over {min_brain_fraction:.0%} of its area; lower "
                         "min_brain_fraction or check the files.")
    positions = slab_splits(len(slices), train_slab=train_slab, held_out_slab=held_out_slab, gap=gap)
    features = datasets.Features({
        "image": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string"),
        "plane": datasets.Value("string"), "slice_index": datasets.Value("int32"),
    })
    splits = {}
    for split, chosen in positions.items():
        rows = [slices[p] for p in chosen]
        columns = {
            "image": [Image.fromarray(s.image, mode="L") for s in rows],
            "mask": [Image.fromarray(s.mask, mode="L") for s in rows],
            "name": [f"mni152_{plane}_{s.index:03d}" for s in rows],
            "plane": [plane] * len(rows),
            "slice_index": [s.index for s in rows],
        }
        splits[split] = datasets.Dataset.from_dict(columns, features=features, split=split)
        logger.info("%s: %d %s slices", split, len(rows), plane)
    ranges = {split: _ranges([slices[p].index for p in chosen]) for split, chosen in positions.items()}
    provenance = {
        "split_method": "slabs",
        "plane": plane,
        "image_size": image_size,
        "train_slab": train_slab,
        "held_out_slab": held_out_slab,
        "gap": gap,
        "min_brain_fraction": min_brain_fraction,
        "margin": margin,
        "slice_ranges": ranges,
    }
    return datasets.DatasetDict(splits), provenance


def _ranges(indices: list[int]) -> str:
    """``[3, 4, 5, 9, 10]`` -> ``"3-5, 9-10"``."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(f"{start}-{index}" if index != start else f"{index}")
            start = None
    return ", ".join(parts)


def mni152_card_body(provenance: dict) -> str:
    """Markdown on the slab split and slice selection, for the dataset card."""
    ranges = "\n".join(f"- {split}: slices {text or 'none'}" for split, text in provenance["slice_ranges"].items())
    size = provenance["image_size"]
    return (
        "## Slices and slab split\n\n"
        f"Plane: {provenance['plane']}; slice size: {f'{size} x {size}' if size else 'the padded template size'}; "
        f"in-plane axes cropped to the brain's bounding box plus {provenance['margin']} voxels, then zero-padded to "
        f"a square; slices kept where brain tissue covers at least {provenance['min_brain_fraction']:.0%} of the slice. "
        f"Consecutive brain slices repeat the pattern {provenance['train_slab']} train, {provenance['gap']} dropped, "
        f"{provenance['held_out_slab']} held out (test and validation in turn), {provenance['gap']} dropped, so every "
        f"test or validation slice is at least {provenance['gap']} slices from any training slice. `slice_index` "
        "is the index along the sliced axis of the RAS-reoriented volume.\n\n" + ranges + "\n"
    )
