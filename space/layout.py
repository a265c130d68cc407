"""The components of the page's parts, as `app.py` builds them and wires their events (layout records only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import gradio as gr

__all__ = ["ApiComponents", "BatchTab", "ImageInputs", "ModelChoices", "ResultOutputs", "SingleImageTab"]

ModelChoices = List[Tuple[str, str]]


@dataclass
class ImageInputs:
    """The single-image tab's left column: model, upload, preview and settings."""

    model: gr.Dropdown
    source: gr.Markdown
    image_file: gr.File
    series_files: gr.File
    preview: gr.Image
    frame: gr.Slider
    threshold: gr.Slider
    num_samples: gr.Slider
    tta: gr.Checkbox
    button: gr.Button
    gallery: Optional[gr.Gallery]


@dataclass
class ResultOutputs:
    """The single-image tab's right column: the views of a result."""

    overlay: gr.Image
    legend: gr.HTML
    opacity: gr.Slider
    compare: gr.ImageSlider
    heatmap: gr.Image
    uncertainty: gr.Image
    table: gr.HTML
    mask_file: gr.File
    seg_file: gr.File
    seg_note: gr.Markdown
    slice_slider: gr.Slider
    volume_files: gr.File
    surface: gr.Model3D


@dataclass
class ApiComponents:
    """The API endpoints' own (hidden) upload, outputs and buttons."""

    image_file: gr.File
    overlay: gr.Image
    mask: gr.File
    prob: gr.Image
    uncertainty: gr.File
    stats: gr.JSON
    seed: gr.Number
    frame: gr.Number
    segment: gr.Button
    uncertain: gr.Button


@dataclass
class SingleImageTab:
    """The single-image tab: its inputs, its result views, the model card panel and the hidden API parts."""

    inputs: ImageInputs
    outputs: ResultOutputs
    about: gr.Markdown
    api: ApiComponents


@dataclass
class BatchTab:
    """The batch tab: files, model and threshold in; zip, CSV and table out."""

    files: gr.File
    model: gr.Dropdown
    threshold: gr.Slider
    button: gr.Button
    zip: gr.File
    csv: gr.File
    table: gr.Dataframe
