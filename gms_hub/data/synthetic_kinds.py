"""The three kinds of synthetic image (`gms_hub.data.synthetic`): each renderer draws a binary lesion mask first,
then paints an image around it with its modality's nuisances (`gms_hub.data.synthetic` describes each kind).

``RENDERERS[kind](rng, size)`` returns ``(image, mask)`` for one example.
"""

from __future__ import annotations

import numpy as np

from .synthetic_shapes import _smooth_noise, _fractal_noise, _box_blur, _stamp_disks, _curve_points, _irregular_shape, _sigmoid, _soft

__all__ = ["RENDERERS"]


def _render_ultrasound(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy = np.linspace(0, 1, size)[:, None]
    # Layered tissue: bright skin line near the top, horizontal bands, smooth echogenicity texture.
    tissue = 0.5 + 0.08 * _fractal_noise(rng, size, (4, 8, 16))
    bands = 0.05 * np.sin(2 * np.pi * (yy * rng.uniform(2, 5) + rng.uniform(0, 1)) + 0.8 * _smooth_noise(rng, size, 4))
    tissue = tissue + bands
    skin = rng.uniform(0.05, 0.12)
    tissue = tissue + 0.35 * np.exp(-(((yy - skin) / 0.03) ** 2))

    mask, edge = _irregular_shape(rng, size, radius_range=(0.15, 0.32), roughness=0.22)
    soft = _soft(edge, rng.uniform(1.0, 3.5) * size / 128)
    # Hypoechoic lesion: darker by a random, sometimes small, factor; internal echoes keep it textured.
    contrast = rng.uniform(0.5, 0.8)
    inner = 0.55 + 0.25 * _fractal_noise(rng, size, (6, 12))
    lesion_level = np.clip(1 - contrast * np.clip(inner, 0.2, 1.2), 0.15, 1)
    tissue = tissue * (1 - soft) + tissue * lesion_level * soft
    # Echogenic rim on part of the boundary (a halo), as in many malignant lesions.
    if rng.random() < 0.5:
        rim = np.exp(-((edge / (1.5 * size / 128)) ** 2)) * (edge < 0)
        tissue = tissue + rng.uniform(0.05, 0.2) * rim * (0.5 + 0.5 * _smooth_noise(rng, size, 6))

    # Posterior shadow (darker) or enhancement (brighter) in the columns below the lesion.
    cols = mask.any(0)
    rows = np.where(mask.any(1))[0]
    column_profile = _box_blur(cols.astype(np.float64)[None, :], max(1, size // 40), axis=1)[0]
    bottom = rows.max() / size + rng.uniform(0.02, 0.06)  # the lesion's far wall stays visible above the shadow
    below = _sigmoid((yy - bottom) / 0.03) * np.exp(-np.clip(yy - bottom, 0, None) / rng.uniform(0.2, 0.6))
    posterior = column_profile[None, :] * below
    sign = -1.0 if rng.random() < 0.5 else 0.6
    tissue = tissue * (1 + sign * rng.uniform(0.05, 0.25) * posterior)

    # Distractors: vertical acoustic shadow streaks and faint dark blobs that are not lesion.
    for _ in range(int(rng.integers(1, 4))):
        x0 = rng.uniform(0, size)
        width = rng.uniform(0.02, 0.08) * size
        start = rng.uniform(0.1, 0.7)
        streak = np.exp(-(((np.arange(size) - x0) / width) ** 2))[None, :] * _sigmoid((yy - start) / 0.05)
        tissue = tissue * (1 - rng.uniform(0.1, 0.35) * streak)
    for _ in range(int(rng.integers(0, 2))):
        _, blob_edge = _irregular_shape(rng, size, radius_range=(0.05, 0.12), roughness=0.1, keep_out=mask)
        blob = _soft(blob_edge, 3.0 * size / 128) * (~mask)
        tissue = tissue * (1 - rng.uniform(0.1, 0.25) * blob)

    # Depth attenuation with time-gain-compensation residue.
    tissue = tissue * np.exp(-rng.uniform(0.2, 0.8) * yy) * (1 + 0.1 * np.sin(2 * np.pi * yy * rng.uniform(0.5, 1.5)))

    # Multiplicative Rayleigh speckle, correlated laterally (the beam is wider than the pulse).
    re = rng.standard_normal((size, size))
    im = rng.standard_normal((size, size))
    lateral = max(1, int(round(size / 100)))
    re = _box_blur(re, lateral, axis=1)
    im = _box_blur(im, lateral, axis=1)
    speckle = np.hypot(re, im)
    speckle = speckle / speckle.mean()
    image = tissue * (1 + rng.uniform(0.35, 0.6) * (speckle - 1))
    image = image + 0.03 * rng.standard_normal((size, size))
    image = np.clip(image * rng.uniform(0.8, 1.1), 0, 1)
    return image, mask


def _render_dermoscopy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    skin_color = np.array([0.86, 0.64, 0.54]) + rng.uniform(-0.08, 0.06, 3)
    texture = 0.04 * _fractal_noise(rng, size, (4, 12, 32))
    skin = skin_color[None, None, :] * (1 + texture[..., None] + 0.02 * rng.standard_normal((size, size, 1)))

    mask, edge = _irregular_shape(rng, size, radius_range=(0.18, 0.36), roughness=0.25)
    soft = _soft(edge, rng.uniform(1.5, 5.0) * size / 128)
    # Uneven pigment: darker core, patchy network, sometimes a pale regression area inside.
    pigment = np.array([0.42, 0.26, 0.18]) * rng.uniform(0.45, 1.2) * (1 + rng.uniform(-0.1, 0.1, 3))
    depth = np.clip(0.55 + 0.3 * _fractal_noise(rng, size, (5, 10, 20)) + 0.25 * np.clip(edge / (0.15 * size), 0, 1), 0, 1)
    strength = rng.uniform(0.45, 0.95)  # low values give faint, low-contrast lesions
    alpha = soft * strength * depth
    lesion = skin * (1 - alpha[..., None]) + pigment[None, None, :] * alpha[..., None]
    image = lesion

    # Hairs: dark thin curves, some forced to cross the lesion.
    hair_layer = np.zeros((size, size))
    n_hairs = int(rng.integers(2, 9))
    ys_lesion, xs_lesion = np.nonzero(mask)
    for i in range(n_hairs):
        if i < 2 and rng.random() < 0.8:  # through a lesion pixel
            j = rng.integers(len(ys_lesion))
            through = np.array([ys_lesion[j], xs_lesion[j]], dtype=np.float64)
            angle = rng.uniform(0, np.pi)
            d = np.array([np.sin(angle), np.cos(angle)]) * size
            start, end = through - d, through + d
        else:
            start = rng.uniform(-0.2, 1.2, 2) * size
            end = rng.uniform(-0.2, 1.2, 2) * size
        points = _curve_points(rng, start, end, bend=0.25)
        thickness = rng.uniform(0.4, 1.2) * max(1.0, size / 128)
        _stamp_disks(hair_layer, points, thickness, np.full(len(points), rng.uniform(0.6, 0.95)))
    hair_color = np.array([0.12, 0.08, 0.06])
    image = image * (1 - hair_layer[..., None]) + hair_color * hair_layer[..., None]

    # Dermoscope vignetting (dark corners) and a slight global color cast.
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    r = np.hypot(yy, xx) / 0.5
    vignette = 1 - rng.uniform(0.2, 0.6) * np.clip(r - rng.uniform(0.6, 0.9), 0, None) / 0.5
    image = image * np.clip(vignette, 0.05, 1)[..., None]
    image = image * (1 + rng.uniform(-0.06, 0.06, 3))[None, None, :]
    image = image + 0.015 * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1), mask


def _render_histology(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    stroma_color = np.array([0.86, 0.6, 0.74]) + rng.uniform(-0.06, 0.06, 3)
    fibers = _fractal_noise(rng, size, (6, 16, 40))
    stroma = stroma_color[None, None, :] * (1 + 0.08 * fibers[..., None])

    mask = np.zeros((size, size), dtype=bool)
    edges = []
    for _ in range(int(rng.integers(1, 4))):
        gland, gland_edge = _irregular_shape(rng, size, radius_range=(0.14, 0.26), roughness=0.2, keep_out=mask)
        mask |= gland
        edges.append(gland_edge)
    edge = np.max(edges, axis=0)  # signed distance to the nearest gland boundary (inside positive)
    ring_width = rng.uniform(0.03, 0.08) * size
    lumen = _soft(edge - ring_width, 2.0)
    epithelium = np.clip(_soft(edge, 1.5) - lumen, 0, 1)

    # Lumen from nearly white to stroma-like pink (mucin, debris), so brightness alone is not the answer.
    lumen_mix = rng.uniform(0.25, 0.9)
    lumen_color = lumen_mix * np.array([0.95, 0.9, 0.93]) + (1 - lumen_mix) * stroma_color
    lumen_color = lumen_color[None, None, :] * (1 + 0.05 * _smooth_noise(rng, size, 10)[..., None])
    epithelium_color = np.array([0.72, 0.5, 0.72]) + rng.uniform(-0.05, 0.05, 3)
    image = stroma * (1 - lumen[..., None]) + lumen_color * lumen[..., None]
    image = image * (1 - epithelium[..., None]) + epithelium_color * epithelium[..., None]

    # Distractors: pale stromal clefts / vessels without an epithelial ring, outside the glands.
    for _ in range(int(rng.integers(0, 3))):
        _, cleft_edge = _irregular_shape(rng, size, radius_range=(0.04, 0.1), roughness=0.3, keep_out=mask)
        cleft = _soft(cleft_edge, 1.5) * (~mask) * rng.uniform(0.4, 0.8)
        image = image * (1 - cleft[..., None]) + np.array([0.96, 0.9, 0.94]) * cleft[..., None]

    # Nuclei: dense along the gland epithelium, scattered in the stroma (a nuclear-density cue that is
    # not perfectly aligned with the boundary).
    nucleus_color = np.array([0.35, 0.2, 0.5])
    nuclear_radius = max(0.8, size / 110)
    n_stroma = int(size * size / rng.uniform(40, 90))
    stroma_nuclei = rng.uniform(0, size - 1, (n_stroma, 2))
    ey, ex = np.nonzero(epithelium > 0.3)
    density = rng.uniform(0.5, 1.0)
    n_epi = min(len(ey), int(density * len(ey) / max(1.0, 2.5 * nuclear_radius**2)))
    pick = rng.choice(len(ey), size=n_epi, replace=False) if n_epi else np.zeros(0, dtype=int)
    epi_nuclei = np.stack([ey[pick], ex[pick]], axis=1).astype(np.float64) + rng.uniform(-1.0, 1.0, (n_epi, 2))
    centers = np.concatenate([stroma_nuclei, epi_nuclei])
    shade = 1 + rng.uniform(-0.15, 0.25, (len(centers), 1))
    _stamp_disks(image, centers, nuclear_radius * rng.uniform(0.7, 1.3, len(centers)), nucleus_color * shade)

    image = image * (1 + 0.06 * _smooth_noise(rng, size, 3)[..., None])  # uneven staining
    image = image + 0.025 * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1), mask


RENDERERS = {
    "ultrasound": _render_ultrasound,
    "dermoscopy": _render_dermoscopy,
    "histology": _render_histology,
}
