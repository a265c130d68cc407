"""What the Space's page shows, built without gradio: previews, overlays, the heat map, the stats table and
the model card.

Every function here is pure (arrays or text in, arrays, text or files out), so the handlers (`space.handlers`)
only call them. Multi-class results use one colour per class (`gms_hub.io.visualize` colours and overlays,
`legend_html` here).
"""

from __future__ import annotations

import html
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gms_hub.io.reading import DEFAULT_MAX_PIXELS
from space.results import UploadFrame, display_image, probability_image, read_upload_frame
from gms_hub.models.processing import to_float_rgb

logger = logging.getLogger(__name__)

__all__ = [
    "ClassRow",
    "DEFAULT_OPACITY",
    "colormap_lut",
    "frame_preview",
    "heatmap_with_colorbar",
    "legend_html",
    "model_card_markdown",
    "preview_image",
    "stats_table_html",
]

DEFAULT_OPACITY = 0.45
"""Opacity of the mask fill over the image (the outline is always solid); the `/segment` overlay uses it."""


PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------- images
def preview_image(path: PathLike, frame: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Render an upload as the model will see it: the library's intensity rule, at most 1024 px a side.

    16-bit images are stretched per image by `gms_hub.models.processing.to_float_rgb` (as `registry.prepare` does), so
    a 16-bit PNG or TIFF whose values use a small part of the range is visible, not black.

    Args:
        path (`str` or `os.PathLike`): the uploaded file.
        frame (`int`, defaults to 0): frame (DICOM) or slice (NIfTI volume) to show, counted from 0; an ordinary
            image has frame 0 only.
        max_pixels (`int`, defaults to `DEFAULT_MAX_PIXELS`): largest accepted width x height.

    Returns:
        `np.ndarray`: (h, w, 3) uint8.

    Raises:
        `InputError` for an unreadable upload or a frame that does not exist.

    Example:
        >>> preview_image("examples/ultrasound_16bit.png").dtype
        dtype('uint8')
    """
    return frame_preview(read_upload_frame(path, frame=frame, max_pixels=max_pixels))


def frame_preview(upload: UploadFrame) -> np.ndarray:
    """An upload's frame already read (`read_upload_frame`) as `preview_image` renders it: (h, w, 3) uint8."""
    return display_image(to_float_rgb(upload.image, value_range=upload.value_range))  # (h, w, 3) uint8


def legend_html(names: Sequence[str], colors: Sequence[Tuple[int, int, int]]) -> str:
    """A one-line legend of class colours for the page (HTML, names escaped; themed by gradio's CSS variables).

    Args:
        names (`Sequence[str]`): names of classes 1..K.
        colors (`Sequence`): their RGB colours, as `gms_hub.io.visualize.label_colors(K)[1:]`.

    Example:
        >>> "benign" in legend_html(["benign"], [(255, 48, 48)])
        True
    """
    items = []
    for name, (r, g, b) in zip(names, colors):
        items.append(
            '<span class="gms-legend-item" style="display:inline-flex;align-items:center;margin:0 12px 4px 0">'
            f'<span style="display:inline-block;width:1em;height:1em;margin-right:6px;background:rgb({int(r)},{int(g)},{int(b)});'
            f'border:1px solid var(--border-color-primary)"></span>{html.escape(str(name))}</span>'
        )
    return f'<div class="gms-legend" style="color:var(--body-text-color);font-size:var(--text-md)">{"".join(items)}</div>'


@lru_cache(maxsize=4)
def colormap_lut(name: str = "viridis") -> np.ndarray:
    """A 256-entry RGB lookup table of a matplotlib colormap (imported on first use only).

    Args:
        name (`str`, defaults to `"viridis"`): a perceptually uniform map reads best (`viridis`, `magma`, `cividis`).

    Returns:
        `np.ndarray`: (256, 3) uint8; entry i is the colour of value i / 255.

    Example:
        >>> colormap_lut()[0].tolist(), colormap_lut()[255].tolist()
        ([68, 1, 84], [253, 231, 37])
    """
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError:
        raise ValueError(f"Unknown colormap {name!r}; use a matplotlib name such as 'viridis'.") from None
    table = cmap(np.linspace(0.0, 1.0, 256))[:, :3]  # (256, 3) float in [0, 1]
    lut = np.rint(table * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def heatmap_with_colorbar(
    probs: np.ndarray, size: Tuple[int, int], colormap: str = "viridis", label: str = "probability"
) -> np.ndarray:
    """Render probabilities in [0, 1] as a colour heat map of size (h, w) with a labelled colour bar on the right.

    The bar's panel is transparent and its text white with a dark outline, so it reads on light and dark pages.

    Args:
        probs (`np.ndarray`): (S, S) float probabilities at the model's resolution.
        size (`tuple(int, int)`): (h, w) of the heat map (the preview's size).
        colormap (`str`, defaults to `"viridis"`): matplotlib colormap name.
        label (`str`, defaults to `"probability"`): title over the bar; empty for none (when the page labels it).

    Returns:
        `np.ndarray`: (h, w + bar width, 4) uint8 RGBA.

    Example:
        >>> heatmap_with_colorbar(np.zeros((8, 8), np.float32), (100, 120)).shape[:2][0]
        100
    """
    height, width = int(size[0]), int(size[1])
    lut = colormap_lut(colormap)
    levels = probability_image(probs, (height, width))  # (h, w) uint8, 255 = probability 1
    heat = lut[levels]  # (h, w, 3)

    font_size = int(np.clip(height / 14, 9, 18))
    font = _font(font_size)
    bar_width = max(10, font_size)
    ticks_width = bar_width + 5 + ImageDraw.Draw(Image.new("L", (1, 1))).textlength("0.5", font=font)
    title_width = ImageDraw.Draw(Image.new("L", (1, 1))).textlength(label, font=font) if label else 0
    panel_width = int(np.ceil(max(ticks_width, title_width))) + 10
    canvas = Image.new("RGBA", (width + panel_width, height), (0, 0, 0, 0))
    canvas.paste(Image.fromarray(heat), (0, 0))
    # Room for the title (if any) and for half a tick label at both ends of the bar.
    top, bottom = (font_size + 6 if label else font_size // 2 + 2), height - font_size // 2 - 2
    bar_height = max(2, bottom - top)
    ramp = lut[np.rint(np.linspace(255, 0, bar_height)).astype(np.uint8)]  # (bar_h, 3): 1 at the top
    bar = np.repeat(ramp[:, None, :], bar_width, axis=1)  # (bar_h, bar_w, 3)
    x0 = width + 6
    canvas.paste(Image.fromarray(bar), (x0, top))
    draw = ImageDraw.Draw(canvas)
    text = dict(font=font, fill=(255, 255, 255, 255), stroke_width=max(1, font_size // 8), stroke_fill=(0, 0, 0, 255))
    draw.rectangle([x0, top, x0 + bar_width - 1, top + bar_height - 1], outline=(128, 128, 128, 255))
    if label:
        draw.text((x0, 1), label, **text)
    for value in (1.0, 0.5, 0.0):
        y = top + round((1.0 - value) * (bar_height - 1))
        draw.line([x0 + bar_width, y, x0 + bar_width + 3, y], fill=(128, 128, 128, 255))
        draw.text((x0 + bar_width + 5, y), f"{value:g}", anchor="lm", **text)
    return np.asarray(canvas)


# ---------------------------------------------------------------------------------------------- numbers
@dataclass(frozen=True)
class ClassRow:
    """One class of a multi-class result for the stats table.

    Args:
        name (`str`): class name.
        area_px (`int`): pixels of the class.
        area_percent (`float`): percent of the image.
        color (`tuple`, *optional*): RGB of its overlay colour, shown as a swatch (the legend).
        area_mm2 (`float`, *optional*): area in mm² where the pixel spacing is known.
    """

    name: str
    area_px: int
    area_percent: float
    color: Optional[Tuple[int, int, int]] = None
    area_mm2: Optional[float] = None


SOURCE_KINDS = {
    "hub": "Hugging Face Hub",
    "local": "local folder",
    "reference": "paper's reference checkpoint",
    "demo": "demo (synthetic data)",
}

_TABLE_STYLE = (
    "width:100%;border-collapse:collapse;table-layout:fixed;font-size:var(--text-md);margin:0;"
    "color:var(--body-text-color);background:var(--background-fill-primary);border:1px solid var(--border-color-primary)"
)
_TH_STYLE = (
    "text-align:left;width:38%;padding:6px 8px;font-weight:600;vertical-align:top;"
    "color:var(--body-text-color);background:var(--background-fill-secondary);"
    "border:1px solid var(--border-color-primary)"
)
_TD_STYLE = "padding:6px 8px;overflow-wrap:anywhere;border:1px solid var(--border-color-primary)"


def _fmt_int(value) -> str:
    return f"{int(value):,}"


def stats_table_html(
    stats: Mapping,
    *,
    model_label: Optional[str] = None,
    seconds: Optional[float] = None,
    area_mm2: Optional[float] = None,
    mean_uncertainty: Optional[float] = None,
    classes: Sequence[ClassRow] = (),
    frame: Optional[Tuple[int, int]] = None,
    volume: Optional[Sequence[Tuple[str, str]]] = None,
) -> str:
    """The result as a small two-column HTML table (styled with gradio's CSS variables, so dark mode works).

    Args:
        stats (`Mapping`): the `/segment` stats: `model`, `source`, `source_kind`, `threshold`, `area_px`,
            `area_percent`, `height`, `width`, `device`, `precision`.
        model_label (`str`, *optional*): readable model name (defaults to `stats["model"]`).
        seconds (`float`, *optional*): time the segmentation took.
        area_mm2 (`float`, *optional*): area in mm² (only when the pixel spacing is known).
        mean_uncertainty (`float`, *optional*): mean uncertainty inside the mask (only when it was computed).
        classes (`Sequence[ClassRow]`, defaults to `()`): per-class rows for multi-class models.
        frame (`tuple(int, int)`, *optional*): (frame number from 1, frame count) of a DICOM/NIfTI file with several.
        volume (`Sequence[tuple(str, str)]`, *optional*): (heading, text) rows of a segmented volume (slices, mL per
            class, voxel size), shown instead of the one frame's segmented area.

    Returns:
        `str`: HTML; every value is escaped.

    Example:
        >>> "1,024 px" in stats_table_html({"model": "busi", "area_px": 1024, "area_percent": 6.25})
        True
    """
    rows = [("Model", model_label or str(stats.get("model", "")))]
    if stats.get("source"):
        kind = str(stats.get("source_kind", ""))
        # Demo and reference labels already say what they are; Hub and folder labels get the kind.
        suffix = f" ({SOURCE_KINDS[kind]})" if kind in ("hub", "local") else ""
        rows.append(("Source", f"{stats['source']}{suffix}"))
    if volume is not None:
        rows.extend((str(head), str(text)) for head, text in volume)
    else:
        area = f"{_fmt_int(stats.get('area_px', 0))} px ({float(stats.get('area_percent', 0.0)):.2f} %)"
        if area_mm2 is not None:
            area += f", {float(area_mm2):.1f} mm²"
        rows.append(("Segmented area", area))
    for row in classes:
        swatch = ""
        if row.color is not None:
            r, g, b = (int(c) for c in row.color)
            swatch = f'<span style="display:inline-block;width:0.8em;height:0.8em;margin-right:4px;background:rgb({r},{g},{b});border:1px solid var(--border-color-primary)"></span>'
        text = f"{_fmt_int(row.area_px)} px ({float(row.area_percent):.2f} %)"
        if row.area_mm2 is not None:
            text += f", {float(row.area_mm2):.1f} mm²"
        rows.append((f"{swatch}{html.escape(row.name)}", html.escape(text), True))
    if mean_uncertainty is not None:
        rows.append(("Mean uncertainty in mask", f"{float(mean_uncertainty):.3f}"))
    if frame is not None:
        rows.append(("Frame / slice", f"{int(frame[0])} of {int(frame[1])}"))
    if "height" in stats and "width" in stats:
        rows.append(("Image size", f"{int(stats['width'])} × {int(stats['height'])} px"))
    if "threshold" in stats:
        rows.append(("Threshold", f"{float(stats['threshold']):.2f}"))
    run = ", ".join(str(stats[k]) for k in ("device", "precision") if stats.get(k))
    if seconds is not None:
        run = f"{float(seconds):.2f} s" + (f" on {run}" if run else "")
    if run:
        rows.append(("Time and device", run))

    body = []
    for row in rows:
        head, value = row[0], row[1]
        if len(row) == 2:  # plain text: escape here; class rows are built escaped above
            head, value = html.escape(head), html.escape(value)
        body.append(f'<tr><th scope="row" style="{_TH_STYLE}">{head}</th><td style="{_TD_STYLE}">{value}</td></tr>')
    return f'<table class="gms-stats" style="{_TABLE_STYLE}"><tbody>{"".join(body)}</tbody></table>'


# ---------------------------------------------------------------------------------------------- model card
_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.DOTALL)


def _card_body(text: str) -> str:
    """Drop the YAML front matter and demote headings by one level (the page has its own title)."""
    body = _FRONT_MATTER.sub("", text, count=1)
    lines, in_code = [], False
    for line in body.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("#"):
            line = "#" + line
        lines.append(line)
    return "\n".join(lines).strip()


def model_card_markdown(kind: str, location: str, revision: Optional[str] = None, online: bool = False) -> str:
    """The served model's card as Markdown for the "About this model" panel.

    Args:
        kind (`str`): the source kind, `"hub"`, `"local"`, `"reference"` or `"demo"` (as `ModelSource.kind`).
        location (`str`): Hub repo id, model folder, or reference checkpoint name.
        revision (`str`, *optional*): Hub revision.
        online (`bool`, defaults to `False`): whether a Hub card not yet cached may be downloaded.

    Returns:
        `str`: the README.md body without its metadata, or a sentence saying why there is no card.

    Example:
        >>> "trained on synthetic data" in model_card_markdown("demo", str(DEMO_MODEL_PATH)).lower()
        True
    """
    path: Optional[Path] = None
    if kind in ("local", "demo"):
        path = Path(location) / "README.md"
    elif kind == "hub":
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(location, "README.md", revision=revision, local_files_only=not online))
        except Exception as err:  # not cached offline, no card, or the Hub refused: say so, do not fail the page
            logger.info("No model card for %s: %s", location, err)
            return f"No model card of `{location}` is available{'' if online else ' offline'}."
    elif kind == "reference":
        return (
            f"The paper's published `{location}` checkpoint (Huo et al., AAAI 2025, "
            "[arXiv:2403.18198](https://arxiv.org/abs/2403.18198)), converted to a GMS on first use. "
            "It has no model card of its own; the paper reports its training data and scores."
        )
    if path is None or not path.is_file():
        return f"This model has no model card (no README.md in `{location}`)."
    text = _card_body(path.read_text(encoding="utf-8", errors="replace"))
    if kind == "demo" and Path(location).name == "demo_brain" and "template" not in text.lower():
        text = "**Demo model trained on one brain MRI template (MNI ICBM152).** Not for clinical use.\n\n" + text
    elif kind == "demo" and Path(location).name != "demo_brain" and "synthetic" not in text.lower():
        # The demo model's plain statement must be on the page even if its card is edited.
        text = "**Demo model trained on synthetic data.** Not for clinical use.\n\n" + text
    return text
