"""GMS Space: segment a medical image with Generative Medical Segmentation (Huo et al., AAAI 2025).

Run locally with `python app.py` (http://127.0.0.1:7860). The API endpoint `/segment` takes
(image file, model name, threshold) and returns (overlay, mask PNG, probability map, stats);
`/segment_uncertainty` adds posterior samples, test-time augmentation, a seed and the frame of a DICOM/NIfTI
file, and returns the uncertainty map too; `/segment_batch` segments several images, DICOM files and NIfTI volumes.
This file builds the page and wires its events; what they do lives in the `space/` package beside it (the
segmenter in `space.handlers`, the API in `space.api`, the page's result in `space.views`, volumes (every slice,
the slice slider, mL, the DICOM series box) in `space.volume` and their 3D surface in `space.surface`, the upload
preview in `space.preview`, the model panel in `space.about`, the examples in `space.gallery`, the batch tab in
`space.batch`, the model registry in `space.registry`, upload handling in `space.results`, rendering in
`space.page`, settings in `space.config`). Environment: `GMS_MODELS`, `GMS_MODELS_FILE`,
`GMS_DEMO_MODEL`, `GMS_DEVICE`, `GMS_PRECISION`, `GMS_MAX_IMAGE_PIXELS`, `GMS_MAX_BATCH_FILES`,
`GMS_MAX_BATCH_FRAMES`, `GMS_RETENTION_S`, `GMS_CONCURRENCY`, `GMS_QUEUE_SIZE`, `GMS_NUM_THREADS`, `GRADIO_SERVER_NAME`,
`GRADIO_SERVER_PORT`,
`HF_HUB_OFFLINE` (see the README's `app` section).
"""

from __future__ import annotations

if __name__ == "__main__":  # before gradio is imported (it reads GRADIO_TEMP_DIR at import): a cache of our own
    from space.retention import gradio_temp_dir

    GRADIO_CACHE_DIR = gradio_temp_dir()

try:  # ZeroGPU (imported before torch): borrow a GPU for the forward pass only; a no-op without `spaces`.
    import spaces

    gpu = spaces.GPU(duration=60)
except ImportError:
    spaces = None

    def gpu(fn):
        return fn


import logging
import os
import tempfile
from pathlib import Path

import gradio as gr

from gms_hub.io.reading import DEFAULT_MAX_PIXELS
from space.about import ModelInfo
from space.api import ApiEndpoints
from space.batch import TABLE_COLUMNS, BatchHandler
from space.gallery import ExampleGallery
from space.handlers import Segmenter
from space.layout import ApiComponents, BatchTab, ImageInputs, ModelChoices, ResultOutputs, SingleImageTab
from space.page import DEFAULT_OPACITY
from space.preview import UploadPreview
from space.registry import ModelRegistry
from space.results import InputError, read_upload
from space.retention import RETENTION_S, prune_stale, remove_at_exit
from space.views import ResultViews
from space.volume import VolumeViews

logger = logging.getLogger("gms_app")
if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
# (file, model, label): the committed examples, made by scripts/make_examples.py.
EXAMPLES = [
    ("ultrasound.png", "busi", "breast ultrasound (8-bit gray PNG)"),
    ("ultrasound_16bit.png", "bus", "breast ultrasound (16-bit PNG)"),
    ("dermoscopy.jpg", "ham10000", "dermoscopy (RGB JPEG)"),
    ("histology.png", "glas", "colon histology (RGB PNG)"),
    ("brain_t1.png", "brain-mri", "T1 brain MRI, axial (MNI template test slab; scripts/make_brain_example.py)"),
]
# No file_types on the uploads: DICOM exports often have no extension; the reader decides and explains.
MEDICAL_HINT = ("PNG, JPEG, BMP, TIFF (8 or 16 bit), DICOM (.dcm or none), NIfTI (.nii, .nii.gz), or a DICOM series: "
                "a .zip of its files, or its files in the box below")
MAX_SAMPLES = 16
MAX_PIXELS = int(os.environ.get("GMS_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))
MAX_BATCH_FILES = int(os.environ.get("GMS_MAX_BATCH_FILES", 50))
MAX_BATCH_FRAMES = int(os.environ.get("GMS_MAX_BATCH_FRAMES", 1000))
prune_stale()  # results folders (gms-app-*) a killed run left behind, once older than RETENTION_S
OUTPUT_DIR = Path(tempfile.mkdtemp(prefix="gms-app-"))
STATE_TTL_S = 1800


def _example_images():
    images = []
    for name, _, _ in EXAMPLES:
        try:
            images.append(read_upload(EXAMPLES_DIR / name))
        except (InputError, OSError) as err:
            logger.warning("Example %s unusable for the float16 check: %s", name, err)
    return images


registry = ModelRegistry.from_env(
    config_file=os.environ.get("GMS_MODELS_FILE", ROOT / "app_models.json"),
    check_images=_example_images(),
)


@gpu
def _forward(model_name, pixel_values, num_samples=0, tta=False, seed=None):
    """The GPU part: the forward pass(es) -> probabilities (S, S), or (K+1, S, S) for a multi-class model."""
    return registry.mask_probabilities(model_name, pixel_values, num_samples=num_samples, tta=tta, seed=seed)


segmenter = Segmenter(registry, _forward, OUTPUT_DIR, MAX_PIXELS, max_samples=MAX_SAMPLES,
                      output_max_age_s=RETENTION_S)
api = ApiEndpoints(segmenter)
views = ResultViews(segmenter)
volume_views = VolumeViews(views)  # a NIfTI volume or a DICOM series: every slice, a slice slider, mL
previews = UploadPreview(segmenter)
model_info = ModelInfo(registry)
example_gallery = ExampleGallery([e for e in EXAMPLES if e[1] in registry.names()],  # a model not configured: no example
                                 EXAMPLES_DIR, OUTPUT_DIR)
batch = BatchHandler(segmenter, max_files=MAX_BATCH_FILES, max_frames=MAX_BATCH_FRAMES)
# The endpoints and the page's events, by the names the API and the tests know them.
segment = api.segment
segment_uncertainty = api.segment_uncertainty
rethreshold = views.rethreshold
segment_page = volume_views.segment_page  # one file: as before; a volume: every slice
show_preview = volume_views.show_preview
show_frame = volume_views.show_frame
show_page = volume_views.show_page
update_page = volume_views.update_page
show_slice = volume_views.show_slice
segment_upload = volume_views.segment_upload  # the page's two upload boxes: one file, or a DICOM series' files
show_upload = volume_views.show_upload
take_series = volume_views.take_series
show_upload_frame = volume_views.show_upload_frame
update_view = views.update_view
show_result = views.show_result
describe_source = model_info.describe_source
about_model = model_info.about_model
load_example = example_gallery.load_example
segment_batch = batch.segment_batch


# Paste an image anywhere on the page: it becomes the upload (gradio's file box takes drops and picks only).
PASTE_JS = """
() => {
  document.addEventListener("paste", (event) => {
    const files = Array.from((event.clipboardData && event.clipboardData.files) || []).filter(f => f.type.startsWith("image/"));
    const input = document.querySelector("#image-file input[type=file]");
    if (!files.length || !input) return;
    const transfer = new DataTransfer();
    transfer.items.add(files[0]);
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    event.preventDefault();
  });
}
"""

CSS = """
#preview img, #overlay img, #heatmap img { width: 100%; height: 100%; object-fit: contain; }
#examples .caption-label { white-space: normal; }
.gradio-container { max-width: 1400px !important; }
"""


def build_demo() -> gr.Blocks:
    """The page: a header, the single-image tab, the batch tab, their events, and the queue."""
    model_choices = [(registry.label(key), key) for key in registry.names()]
    with gr.Blocks(title="GMS: Generative Medical Segmentation", delete_cache=(min(RETENTION_S, 600), RETENTION_S)) as demo:
        page_header()
        with gr.Tabs():
            single = single_image_tab(model_choices)
            batch_tab = batch_files_tab(model_choices)
        # Cached probabilities (model resolution) + preview for the sliders; per session, expiring.
        result = gr.State(None, time_to_live=STATE_TTL_S)
        wire_api_endpoints(single)
        wire_single_image_page(demo, single, result)
        wire_batch_tab(batch_tab)
    configure_queue(demo)
    return demo


# ---------------------------------------------------------------------------------------------- shared parts
def page_header() -> None:
    network = "online" if registry.online else "offline (no network found at startup)"
    gr.Markdown(
        "# GMS: Generative Medical Segmentation\n"
        "A frozen Stable Diffusion VAE encodes the image, a 1.5 M-parameter latent mapping model turns the "
        "image latent into a mask latent, and the same VAE decodes the mask "
        "([Huo et al., AAAI 2025](https://arxiv.org/abs/2403.18198)). "
        f"Research demo, not for diagnosis. Network: {network}."
    )


def about_panel() -> gr.Markdown:
    with gr.Accordion("About this model", open=False, elem_id="about"):
        return gr.Markdown(about_model("busi"), elem_id="model-card")


def configure_queue(demo: gr.Blocks) -> None:
    # CPU threads per forward pass: GMS_NUM_THREADS, 0 (the default) keeps torch's, one per core. On a machine shared
    # with other work, fewer threads avoid oversubscription (the passes of GMS_CONCURRENCY requests share the cores).
    threads = int(os.environ.get("GMS_NUM_THREADS", 0))
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    # The queue bounds concurrent forward passes (and so memory); extra requests wait, beyond max_size they are refused.
    demo.queue(
        default_concurrency_limit=int(os.environ.get("GMS_CONCURRENCY", 2)),
        max_size=int(os.environ.get("GMS_QUEUE_SIZE", 32)),
    )


# ---------------------------------------------------------------------------------------------- single image
def single_image_tab(model_choices: ModelChoices) -> SingleImageTab:
    with gr.Tab("Segment an image", id="single"):
        with gr.Row(equal_height=False):
            with gr.Column(min_width=320):
                inputs = image_inputs(model_choices)
            with gr.Column(min_width=320):
                outputs = result_outputs()
        about = about_panel()
        api = api_components()
    return SingleImageTab(inputs=inputs, outputs=outputs, about=about, api=api)


def image_inputs(model_choices: ModelChoices) -> ImageInputs:
    model = gr.Dropdown(
        choices=model_choices,
        value="busi",
        label="Model (benchmark it was trained on, or a configured model)",
        allow_custom_value=True,  # so the API gets our message for an unknown name
        elem_id="model",
    )
    source = gr.Markdown(describe_source("busi"), elem_id="model-source")
    # No file_types: DICOM exports often have no extension; the reader decides and explains.
    # One file: a multiple box appends a new drop to the files already there, so a series has a box of its own.
    image_file = gr.File(
        label=f"Image: drop, paste or click to choose ({MEDICAL_HINT})",
        height=120,
        elem_id="image-file",
    )
    # A DICOM series' single-frame files, dropped together; an upload here empties the box above and the reverse.
    # No file_types either: series files often have no extension (IM0001).
    with gr.Accordion("DICOM series: several files of one scan", open=False, elem_id="series-accordion"):
        series_files = gr.File(
            label="DICOM series: drop or choose all its files at once (replaces the image above)",
            file_count="multiple", height=120, elem_id="series-files",
        )
    preview = gr.Image(
        label="Your image (as the model sees it)", type="filepath", interactive=False,
        height=300, buttons=["fullscreen"], elem_id="preview",
    )
    # Shown only for a DICOM/NIfTI file with several frames; the maximum is set per upload.
    frame = gr.Slider(1, 10_000, value=1, step=1, label="Frame", visible=False, elem_id="frame")
    threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Threshold (re-thresholds without rerunning)")
    with gr.Row():
        num_samples = gr.Slider(
            0, MAX_SAMPLES, value=0, step=1, elem_id="num-samples", min_width=200,
            label="Posterior samples (0 = the paper's single pass)",
            info="Each sample is one more decode.",
        )
        tta = gr.Checkbox(False, label="Test-time augmentation (8 flips and turns)", elem_id="tta",
                          min_width=160)
    button = gr.Button("Segment", variant="primary", elem_id="segment-button")
    gallery = None
    examples = example_gallery.example_thumbnails()
    if examples:
        gallery = gr.Gallery(
            value=examples, label="Examples (click one to segment it)", columns=4, rows=1,
            height=180, allow_preview=False, object_fit="contain", buttons=[], elem_id="examples",
        )
    return ImageInputs(model=model, source=source, image_file=image_file, series_files=series_files,
                       preview=preview, frame=frame,
                       threshold=threshold, num_samples=num_samples, tta=tta, button=button, gallery=gallery)


def result_outputs() -> ResultOutputs:
    with gr.Tabs():
        with gr.Tab("Overlay", id="overlay-tab"):
            overlay = gr.Image(label="Mask overlay", type="filepath", interactive=False,
                               height=360, elem_id="overlay")
            legend = gr.HTML("", visible=False, elem_id="legend")  # multi-class models only
            opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Overlay opacity",
                                elem_id="opacity")
        with gr.Tab("Compare", id="compare-tab", elem_id="compare-tab"):
            compare = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath",
                                     interactive=False, max_height=360, elem_id="compare")
        with gr.Tab("Probability", id="probability-tab", elem_id="probability-tab"):
            heatmap = gr.Image(label="Probability heat map", type="filepath", interactive=False,
                               height=360, buttons=[], elem_id="heatmap")  # no toolbar over the bar
        with gr.Tab("Uncertainty", id="uncertainty-tab", elem_id="uncertainty-tab"):
            gr.Markdown("Normalised predictive entropy over the passes: 0 where they agree, 1 where "
                        "they disagree most. Set posterior samples above 0 or tick test-time "
                        "augmentation, then Segment.")
            uncertainty = gr.Image(label="Uncertainty map", type="filepath", interactive=False,
                                   height=360, buttons=[], elem_id="uncertainty")
    # Shown for a segmented volume (NIfTI, DICOM series): moves the views to slice k without running the model.
    slice_slider = gr.Slider(1, 2, value=1, step=1, label="Slice of the segmented volume", visible=False,
                             elem_id="slice")
    # Volumes only. visible="hidden" (rendered, not displayed), not False: a Model3D first shown by the update that
    # also brings its file never mounts its canvas (gradio 6.31; checked in Chromium).
    surface = gr.Model3D(label="3D surface of the mask", visible="hidden", height=320, elem_id="surface")
    table = gr.HTML("<p>Segment an image to see its numbers here.</p>", label="Result",
                    elem_id="result-table")
    mask_file = gr.File(label="Mask PNG (input size, values 0/255; 0..K for several classes)",
                        interactive=False, elem_id="mask-file")
    seg_file = gr.File(label="DICOM SEG of the mask", interactive=False, visible=False,
                       elem_id="seg-file")
    seg_note = gr.Markdown("", visible=False, elem_id="seg-note")
    volume_files = gr.File(label="Volume: NIfTI mask (or DICOM SEG of a series) and volumes.csv", file_count="multiple",
                           interactive=False, visible=False, elem_id="volume-files")
    return ResultOutputs(overlay=overlay, legend=legend, opacity=opacity, compare=compare, heatmap=heatmap,
                         uncertainty=uncertainty, table=table, mask_file=mask_file, seg_file=seg_file,
                         seg_note=seg_note, slice_slider=slice_slider, volume_files=volume_files, surface=surface)


def api_components() -> ApiComponents:
    # The API endpoints' own outputs and buttons: the page shows results differently (heat map, table),
    # and its button takes the frame and the uncertainty controls, which /segment does not.
    with gr.Group(visible=False):
        return ApiComponents(
            image_file=gr.File(),  # one file: the page's upload box also takes a series' files
            overlay=gr.Image(type="filepath", format="png"),
            mask=gr.File(),
            prob=gr.Image(type="filepath", format="png"),
            uncertainty=gr.File(),
            stats=gr.JSON(),
            seed=gr.Number(0, precision=0),
            frame=gr.Number(1, precision=0),
            segment=gr.Button(),
            uncertain=gr.Button(),
        )


def wire_api_endpoints(single: SingleImageTab) -> None:
    inputs, api = single.inputs, single.api
    api.segment.click(
        segment,
        inputs=[api.image_file, inputs.model, inputs.threshold],
        outputs=[api.overlay, api.mask, api.prob, api.stats],
        api_name="segment",
        api_description="Segment an image: (image file, model name, threshold) -> (overlay, mask PNG, probability map, stats).",
    )
    api.uncertain.click(
        segment_uncertainty,
        inputs=[api.image_file, inputs.model, inputs.threshold, inputs.num_samples, inputs.tta, api.seed, api.frame],
        outputs=[api.overlay, api.mask, api.prob, api.uncertainty, api.stats],
        api_name="segment_uncertainty",
        api_description="Segment one image or one DICOM/NIfTI frame with posterior samples and test-time "
        "augmentation: (image file, model name, threshold, num_samples 0-16, tta, seed, frame from 1) -> "
        "(overlay, mask PNG, probability map, uncertainty map PNG (16-bit), stats with mean_uncertainty).",
    )


def wire_single_image_page(demo: gr.Blocks, single: SingleImageTab, result: gr.State) -> None:
    """The page's own events (private: not part of the API)."""
    inputs, out = single.inputs, single.outputs
    page_views = [out.overlay, out.compare, out.mask_file, out.table, out.legend, out.seg_file, out.seg_note,
                  out.heatmap, out.uncertainty, out.volume_files, out.slice_slider, out.surface]
    updated_views = page_views[:7] + [out.volume_files, out.surface]  # a threshold or opacity change
    uploads = [inputs.image_file, inputs.series_files]  # one of the two holds what is segmented
    page_inputs = [*uploads, inputs.model, inputs.threshold, inputs.frame, inputs.num_samples, inputs.tta]
    view_inputs = [result, inputs.threshold, out.opacity, out.slice_slider]

    inputs.button.click(segment_upload, inputs=page_inputs, outputs=result, api_visibility="private").success(
        show_page, inputs=view_inputs, outputs=page_views, api_visibility="private"
    ).then(describe_source, inputs=inputs.model, outputs=inputs.source, api_visibility="private")
    for control in (inputs.threshold, out.opacity):
        control.release(
            update_page, inputs=view_inputs, outputs=updated_views,
            api_visibility="private", concurrency_id="rethreshold", concurrency_limit=4,
        )
    out.slice_slider.release(show_slice, inputs=view_inputs, outputs=[out.overlay, out.compare, out.mask_file, out.heatmap],
                             api_visibility="private", concurrency_id="rethreshold", concurrency_limit=4)
    preview_views = [inputs.preview, inputs.frame, inputs.series_files]
    inputs.image_file.change(show_upload, inputs=uploads, outputs=preview_views,
                             api_visibility="private", concurrency_id="preview", concurrency_limit=4)
    inputs.series_files.upload(take_series, inputs=inputs.series_files,
                               outputs=[inputs.image_file, inputs.preview, inputs.frame],
                               api_visibility="private", concurrency_id="preview", concurrency_limit=4)
    inputs.series_files.clear(show_upload, inputs=uploads, outputs=preview_views,
                              api_visibility="private", concurrency_id="preview", concurrency_limit=4)
    inputs.frame.release(show_upload_frame, inputs=[*uploads, inputs.frame], outputs=inputs.preview,
                         api_visibility="private", concurrency_id="preview", concurrency_limit=4)
    inputs.model.change(describe_source, inputs=inputs.model, outputs=inputs.source, api_visibility="private",
                        queue=False)
    inputs.model.change(about_model, inputs=inputs.model, outputs=single.about, api_visibility="private", queue=False)
    demo.load(describe_source, inputs=inputs.model, outputs=inputs.source, api_visibility="private", queue=False)
    if inputs.gallery is not None:
        inputs.gallery.select(load_example, outputs=[inputs.image_file, inputs.model, inputs.frame],
                              api_visibility="private", queue=False).then(
            segment_upload, inputs=page_inputs, outputs=result, api_visibility="private",
        ).success(
            show_page, inputs=view_inputs, outputs=page_views, api_visibility="private"
        ).then(describe_source, inputs=inputs.model, outputs=inputs.source, api_visibility="private")


# ---------------------------------------------------------------------------------------------- batch
def batch_files_tab(model_choices: ModelChoices) -> BatchTab:
    with gr.Tab("Batch", id="batch"):
        gr.Markdown("Segment many files with one model: a zip of the masks (PNG per image, NIfTI per NIfTI "
                    "volume, DICOM SEG per DICOM file) and a CSV with one row per frame or slice.")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=320):
                files = gr.File(label="Files: images, DICOM, NIfTI (several at once)", file_count="multiple",
                                elem_id="batch-files")
                model = gr.Dropdown(choices=model_choices, value="busi", label="Model",
                                    allow_custom_value=True, elem_id="batch-model")
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Threshold")
                button = gr.Button("Segment all", variant="primary", elem_id="batch-button")
            with gr.Column(min_width=320):
                zip_file = gr.File(label="Masks (zip)", interactive=False, elem_id="batch-zip")
                csv_file = gr.File(label="Stats (CSV)", interactive=False, elem_id="batch-csv")
                table = gr.Dataframe(headers=list(TABLE_COLUMNS),
                                     label="Results", interactive=False, wrap=True, elem_id="batch-table")
    return BatchTab(files=files, model=model, threshold=threshold, button=button, zip=zip_file, csv=csv_file,
                    table=table)


def wire_batch_tab(tab: BatchTab) -> None:
    tab.button.click(
        segment_batch,
        inputs=[tab.files, tab.model, tab.threshold],
        outputs=[tab.zip, tab.csv, tab.table],
        api_name="segment_batch",
        api_description="Segment several images, DICOM files and NIfTI volumes: (files, model name, threshold) -> "
        "(zip of masks: PNG per image, NIfTI per NIfTI, DICOM SEG per DICOM; stats CSV with one row per frame; "
        "rows [file, frame, area_px, area_percent, area_mm2, error]).",
        concurrency_id="segment_batch",
        concurrency_limit=1,
    )


demo = build_demo()

if __name__ == "__main__":
    remove_at_exit(OUTPUT_DIR, GRADIO_CACHE_DIR)  # SIGTERM and Ctrl-C included
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        max_file_size="200mb",
        state_session_capacity=500,
        allowed_paths=[str(EXAMPLES_DIR)],
        js=PASTE_JS,
        css=CSS,
    )
