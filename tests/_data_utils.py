"""Miniature raw layouts of the five benchmarks, for the data tests.

Each writer creates tiny images (10x8 px by default) under the names and folder structure of the real
download, so the converters see what they would see on the real data. Names come from the paper's split
lists in the shared folder (read at run time, never copied into the repository).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pytest
from PIL import Image

SPLITS_DIR = Path(os.environ.get("GMS_SPLITS_DIR", Path(__file__).resolve().parents[2] / "shared" / "splits"))
SIZE = (10, 8)  # (W, H): non-square on purpose


def split_json(dataset: str) -> Path:
    path = SPLITS_DIR / f"{dataset}.json"
    if not path.is_file():
        pytest.skip(f"the paper's split lists are not available at {SPLITS_DIR} (set GMS_SPLITS_DIR)")
    return path


def split_pickle(dataset: str) -> Path:
    path = SPLITS_DIR / f"{dataset}_train_test_names.pkl"
    if not path.is_file():
        pytest.skip(f"the paper's split pickles are not available at {SPLITS_DIR} (set GMS_SPLITS_DIR)")
    return path


def split_names(dataset: str) -> dict[str, list[str]]:
    return json.loads(split_json(dataset).read_text())


def subset_split(tmp_path: Path, dataset: str, n_train: int, n_test: int) -> tuple[Path, dict[str, list[str]]]:
    """A split json with the first names of the paper's lists, written to `tmp_path`."""
    names = split_names(dataset)
    subset = {"train": names["train"][:n_train], "test": names["test"][:n_test]}
    path = tmp_path / f"{dataset}-subset.json"
    path.write_text(json.dumps(subset))
    return path, subset


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))


def tiny_image(name: str, mode: str = "RGB", size=SIZE) -> Image.Image:
    rng = _rng("image" + name)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def tiny_mask(name: str, part: int = 0, size=SIZE) -> np.ndarray:
    """A bool (H, W) rectangle that depends on the name and part, never empty."""
    rng = _rng(f"mask{part}" + name)
    w, h = size
    y0, x0 = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
    mask = np.zeros((h, w), dtype=bool)
    mask[y0 : y0 + int(rng.integers(2, h - y0 + 1)), x0 : x0 + int(rng.integers(2, w - x0 + 1))] = True
    return mask


def save_mask(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def save_image(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def busi_raw_name(name: str) -> str:
    label, number = name.rsplit("_", 1)
    return f"{label} ({number})"


def make_busi(root: Path, names: Iterable[str], extra_lesions: Sequence[str] = (), n_normal: int = 2) -> Path:
    """``Dataset_BUSI_with_GT/{benign,malignant,normal}/benign (1).png`` + ``_mask.png`` [+ ``_mask_1.png``]."""
    base = root / "Dataset_BUSI_with_GT"
    for name in list(names) + [f"normal_{i}" for i in range(1, n_normal + 1)]:
        label = name.rsplit("_", 1)[0]
        raw = busi_raw_name(name)
        save_image(tiny_image(name), base / label / f"{raw}.png")
        save_mask(tiny_mask(name), base / label / f"{raw}_mask.png")
        if name in extra_lesions:
            save_mask(tiny_mask(name, part=1), base / label / f"{raw}_mask_1.png")
    return root


def glas_labels(name: str) -> np.ndarray:
    """An instance label map: two glands labelled 1 and 2 (plus a third, label 7, on some names)."""
    labels = np.zeros((SIZE[1], SIZE[0]), dtype=np.uint8)
    labels[tiny_mask(name, 0)] = 1
    labels[tiny_mask(name, 1) & ~tiny_mask(name, 0)] = 2
    if _rng(name).random() < 0.5:
        labels[0, 0] = 7
    return labels


def make_glas(root: Path, names: Iterable[str], grade_csv: bool = True) -> Path:
    """``Warwick QU Dataset (Released 2016_07_08)/testA_3.bmp`` + ``testA_3_anno.bmp`` (+ Grade.csv)."""
    base = root / "Warwick QU Dataset (Released 2016_07_08)"
    base.mkdir(parents=True, exist_ok=True)
    rows = ["name, patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    for i, name in enumerate(names):
        save_image(tiny_image(name), base / f"{name}.bmp")
        Image.fromarray(glas_labels(name)).save(base / f"{name}_anno.bmp")
        rows.append(f"{name}, {i % 17}, {' benign' if i % 2 else ' malignant'}, adenomatous")
    if grade_csv:
        (base / "Grade.csv").write_text("\n".join(rows) + "\n")
    return root


def make_ham(root: Path, names: Iterable[str], metadata: bool = True, empty_files: bool = False) -> Path:
    """``HAM10000_images_part_{1,2}/ISIC_*.jpg`` + ``HAM10000_segmentations_lesion_tschandl/ISIC_*_segmentation.png``."""
    names = list(names)
    masks_dir = root / "HAM10000_segmentations_lesion_tschandl"
    masks_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        images_dir = root / f"HAM10000_images_part_{1 + i % 2}"
        if empty_files:
            images_dir.mkdir(exist_ok=True)
            (images_dir / f"{name}.jpg").touch()
            (masks_dir / f"{name}_segmentation.png").touch()
        else:
            save_image(tiny_image(name), images_dir / f"{name}.jpg")
            save_mask(tiny_mask(name), masks_dir / f"{name}_segmentation.png")
    if metadata:
        lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
        lines += [f"HAM_{i:07d},{name},{('nv', 'mel', 'bkl')[i % 3]},histo,50.0,male,back" for i, name in enumerate(names)]
        (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def make_kvasir(root: Path, names: Iterable[str]) -> Path:
    """``kvasir-instrument/images/<id>.jpg`` + ``kvasir-instrument/masks/<id>.png``."""
    base = root / "kvasir-instrument"
    for name in names:
        save_image(tiny_image(name), base / "images" / f"{name}.jpg")
        save_mask(tiny_mask(name), base / "masks" / f"{name}.png")
    return root


def make_bus(root: Path, names: Iterable[str]) -> Path:
    """``BUS_Dataset_B/original/000001.png`` (grayscale) + ``BUS_Dataset_B/GT/000001.png``."""
    base = root / "BUS_Dataset_B"
    for name in names:
        save_image(tiny_image(name, mode="L"), base / "original" / f"{name}.png")
        save_mask(tiny_mask(name), base / "GT" / f"{name}.png")
    return root


def rows_by_name(ds) -> dict[str, dict]:
    return {row["name"]: row for row in ds}


def load_split(folder: Path, split: str, cache_dir: Path):
    from gms_hub.data import load_gms_dataset

    return load_gms_dataset(folder, split=split, cache_dir=cache_dir)
