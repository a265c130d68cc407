"""The 3D surface view of a segmented volume: marching cubes per class on the label volume, in millimetres, written
as a Wavefront OBJ for the page's `gr.Model3D`.

`skimage.measure.marching_cubes` runs on each class's binary mask (padded by one empty voxel, so every surface is
closed) at level 0.5 with the voxel size as spacing; a surface therefore passes half a voxel outside the outermost
voxels of the mask, and its bounds are the mask's extent times the voxel size. Large volumes are sampled with a
larger `step_size` (`surface_step`) so a 128^3 volume stays well under a second (`benchmarks/surface_view.py`).
The file holds one object (`o <class name>`) per class and goes into the result's own folder, pruned with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from gms_hub.io.safety import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["FULL_RESOLUTION_VOXELS", "surface_step", "write_surface_obj"]

FULL_RESOLUTION_VOXELS = 96 ** 3
"""Volumes up to this many voxels get a surface at every voxel; larger ones are sampled every `surface_step` voxels
(marching cubes and the OBJ text grow with the surface, about the volume's voxel count to the power 2/3)."""


def surface_step(shape: Sequence[int]) -> int:
    """The marching-cubes step for a volume of `shape`: 1 up to `FULL_RESOLUTION_VOXELS`, then the smallest step
    whose sampled volume fits that budget.

    Example:
        >>> surface_step((5, 64, 64)), surface_step((128, 128, 128)), surface_step((300, 512, 512))
        (1, 2, 4)
    """
    voxels = float(np.prod(shape))
    step = 1
    while voxels / step ** 3 > FULL_RESOLUTION_VOXELS:
        step += 1
    return step


def _class_mesh(mask: np.ndarray, spacing: Tuple[float, float, float], step: int):
    from skimage.measure import marching_cubes

    padded = np.pad(mask.astype(np.float32), 1)  # (F+2, H+2, W+2): closed surfaces at the volume's borders
    if min(padded.shape) < 2 * step + 1:
        step = 1  # too thin to sample: every voxel
    vertices, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing, step_size=step,
                                           allow_degenerate=False)
    vertices -= np.asarray(spacing, dtype=vertices.dtype)  # undo the padding: voxel centre (0, 0, 0) at the origin
    return vertices, faces


def write_surface_obj(labels: np.ndarray, names: Sequence[str], path, spacing=None) -> Optional[Path]:
    """Write the surface of each foreground class of a label volume as one OBJ file.

    Args:
        labels (`np.ndarray`): (F, H, W) labels, 0 = background, class c > 0 = `names[c - 1]` (bool for one class).
        names (`Sequence[str]`): the foreground classes' names, in label order.
        path (`str` or `os.PathLike`): the `.obj` file to write (atomically).
        spacing (`tuple(float, float, float)`, *optional*): voxel size in mm along (slices, rows, columns); `None`
            draws in voxels.

    Returns:
        `Path` of the file, or `None` when no class has a voxel (nothing to draw).

    The coordinates are x = column, y = -row (up in the 3D view is up in the slice), z = slice, in mm, with the
    first voxel's centre at the origin.

    Example:
        >>> write_surface_obj(labels, ["tumour"], "out/surface.obj", spacing=(2.5, 0.7, 0.7))
        PosixPath('out/surface.obj')
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"A surface needs a (slices, rows, columns) label volume, got shape {labels.shape}.")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
    step = surface_step(labels.shape)
    parts, offset = [], 1  # OBJ vertex numbers start at 1 and run on across objects
    for value, name in enumerate(names, start=1):
        mask = labels == value
        if not mask.any():
            continue
        vertices, faces = _class_mesh(mask, spacing, step)  # vertices (N, 3) in (slice, row, column) mm
        if not len(faces):
            continue
        xyz = vertices[:, ::-1] * np.array([1.0, -1.0, 1.0])  # x = column, y = -row, z = slice
        faces = faces[:, ::-1]  # one axis mirrored: reversed winding keeps the faces' outward side
        parts.append(f"o {name}\n")
        parts.append(("v %.4f %.4f %.4f\n" * len(xyz)) % tuple(xyz.ravel().tolist()))
        parts.append(("f %d %d %d\n" * len(faces)) % tuple((faces + offset).ravel().tolist()))
        offset += len(vertices)
    if not parts:
        return None
    path = Path(path)
    with atomic_path(path) as temporary:
        Path(temporary).write_text("# gms_hub surface: x = column, y = -row, z = slice, in mm\n" + "".join(parts))
    logger.info("Surface of %d class(es) written (marching cubes step %d).", len(parts) // 3, step)
    return path
