"""Drawing helpers of the synthetic benchmark (noise, blurs, irregular shapes, soft edges), shared by the binary
generator (`gms_hub.data.synthetic`) and the multi-class one (`gms_hub.data.synthetic_multiclass`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Margin (in pixels) kept free of lesion on every side, so no mask pixel touches the border.
_BORDER_MARGIN = 2


# --------------------------------------------------------------------------------------------------
# Small numpy helpers
# --------------------------------------------------------------------------------------------------
def _upsample_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly resize a small (h, w) grid to (size, size), half-pixel centres."""
    h, w = grid.shape
    ys = (np.arange(size) + 0.5) * h / size - 0.5
    xs = (np.arange(size) + 0.5) * w / size - 0.5
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[:, None]
    wx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
    bottom = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise: a (cells x cells) Gaussian grid upsampled to (size, size)."""
    cells = max(2, int(cells))
    return _upsample_bilinear(rng.standard_normal((cells, cells)), size)


def _fractal_noise(rng: np.random.Generator, size: int, octaves: Sequence[int]) -> np.ndarray:
    """Sum of smooth noises at several grid resolutions, amplitude halving per octave, std ~ 1."""
    total = np.zeros((size, size))
    amplitude, norm = 1.0, 0.0
    for cells in octaves:
        total += amplitude * _smooth_noise(rng, size, cells)
        norm += amplitude**2
        amplitude *= 0.5
    return total / np.sqrt(norm)


def _box_blur(image: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Box blur of width 2*radius+1 along one axis (edge-replicated), via cumulative sums."""
    if radius <= 0:
        return image
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius + 1, radius)
    padded = np.pad(image, pad, mode="edge")
    csum = np.cumsum(padded, axis=axis)
    n = image.shape[axis]
    upper = np.take(csum, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lower = np.take(csum, np.arange(0, n), axis=axis)
    return (upper - lower) / (2 * radius + 1)


def _stamp_disks(
    canvas: np.ndarray,
    centers: np.ndarray,
    radii: np.ndarray | float,
    values: np.ndarray,
) -> None:
    """Paint filled disks in place: ``canvas[pixel] = value`` for every pixel of every disk.

    Args:
        canvas (`np.ndarray`): (H, W) or (H, W, C) float array, modified in place.
        centers (`np.ndarray`): (N, 2) float (y, x) disk centres.
        radii (`np.ndarray` or `float`): disk radius per centre (or one for all), in pixels.
        values (`np.ndarray`): (N,) or (N, C) values painted per disk.
    """
    if len(centers) == 0:
        return
    h, w = canvas.shape[:2]
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(centers),))
    r_max = int(np.ceil(radii.max()))
    oy, ox = np.mgrid[-r_max : r_max + 1, -r_max : r_max + 1]
    oy, ox = oy.ravel(), ox.ravel()
    cy = np.rint(centers[:, 0]).astype(np.int64)[:, None]
    cx = np.rint(centers[:, 1]).astype(np.int64)[:, None]
    inside = (oy[None, :] ** 2 + ox[None, :] ** 2) <= (radii[:, None] ** 2 + 0.25)
    ys = cy + oy[None, :]
    xs = cx + ox[None, :]
    valid = inside & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    disk_index = np.broadcast_to(np.arange(len(centers))[:, None], valid.shape)[valid]
    canvas[ys[valid], xs[valid]] = np.asarray(values)[disk_index]


def _curve_points(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, bend: float) -> np.ndarray:
    """Points every ~0.5 px along a quadratic Bezier curve from ``start`` to ``end``, (N, 2) as (y, x)."""
    direction = end - start
    length = float(np.hypot(*direction)) + 1e-6
    normal = np.array([-direction[1], direction[0]]) / length
    control = (start + end) / 2 + normal * bend * length * rng.uniform(-1, 1)
    t = np.linspace(0, 1, max(4, int(length * 2)))[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end


# --------------------------------------------------------------------------------------------------
# Lesion geometry
# --------------------------------------------------------------------------------------------------
def _irregular_shape(
    rng: np.random.Generator,
    size: int,
    radius_range: tuple[float, float],
    lobes: tuple[int, int] = (2, 7),
    roughness: float = 0.18,
    keep_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An irregular star-shaped region fully inside the image.

    The boundary is ``r(theta) = 1 + sum_k a_k cos(k theta + phi_k)`` in a rotated, anisotropically scaled
    frame. The centre is drawn so that the largest possible extent stays ``_BORDER_MARGIN`` pixels away
    from every edge.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: ``mask`` (bool, (S, S)) and ``edge`` (float, (S, S)), the
        approximate signed distance to the boundary in pixels (positive inside).
    """
    radius = rng.uniform(*radius_range) * size
    aspect = rng.uniform(0.65, 1.0)
    semi_axes = np.array([radius, radius * aspect])
    n_terms = int(rng.integers(lobes[0], lobes[1] + 1))
    ks = np.arange(2, 2 + n_terms)
    amplitudes = rng.uniform(0, 1, n_terms) * roughness / np.sqrt(ks - 1)
    phases = rng.uniform(0, 2 * np.pi, n_terms)
    extent = float(semi_axes.max() * (1 + amplitudes.sum()))
    lo = _BORDER_MARGIN + extent
    hi = size - 1 - _BORDER_MARGIN - extent
    if hi < lo:  # shape too large for the image: shrink it to fit
        scale = (size - 1 - 2 * _BORDER_MARGIN) / (2 * extent) * 0.98
        semi_axes *= scale
        extent *= scale
        lo = hi = (size - 1) / 2
    center = rng.uniform(lo, hi, 2)
    if keep_out is not None:  # try a few centres away from existing structures
        for _ in range(8):
            cy, cx = np.rint(center).astype(int)
            if not keep_out[cy, cx]:
                break
            center = rng.uniform(lo, hi, 2)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - center[0], xx - center[1]
    u = (dy * np.cos(angle) + dx * np.sin(angle)) / semi_axes[0]
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / semi_axes[1]
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = 1 + (amplitudes[:, None, None] * np.cos(ks[:, None, None] * theta + phases[:, None, None])).sum(0)
    mask = rho < boundary
    edge = (boundary - rho) * semi_axes.mean()
    return mask, edge


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _soft(edge: np.ndarray, width: float) -> np.ndarray:
    """Soft membership in [0, 1] from a signed edge distance: 0.5 on the boundary, ramp of ``width`` px."""
    return np.clip(0.5 + edge / max(width, 1e-3), 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Renderers, one per kind: each returns (image float in [0, 1], (S, S) or (S, S, 3); mask bool (S, S))
# --------------------------------------------------------------------------------------------------
