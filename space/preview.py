"""The upload preview: the file as the model sees it as soon as it is chosen, and the frame (DICOM) or slice
(NIfTI) selector for a file with several."""

from __future__ import annotations

import gradio as gr

from .handlers import Segmenter, check_frame, save_png, upload_stem, user_error
from .page import frame_preview
from .results import InputError, read_upload_frame

__all__ = ["UploadPreview"]


class UploadPreview:
    """`show_preview` and `show_frame`, writing previews into the segmenter's results folder.

    Args:
        segmenter (`Segmenter`): its size limit and results folder.
    """

    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter

    def show_preview(self, image_file):
        """The upload as the model sees it (library intensity rule), shown as soon as a file is chosen, and the
        frame/slice selector, shown only for a DICOM or NIfTI file with several frames."""
        hidden = gr.update(value=1, maximum=2, visible=False)
        if not image_file:
            return None, hidden
        try:
            upload = read_upload_frame(image_file, frame=0, max_pixels=self.segmenter.max_pixels)
            preview = frame_preview(upload)
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        path = save_png(preview, self.segmenter.new_output_folder() / f"{upload_stem(image_file, upload.kind)}_preview.png")
        if upload.num_frames < 2:
            return path, hidden
        what = "Slice" if upload.kind == "nifti" else "Frame"
        selector = gr.update(value=1, maximum=upload.num_frames, visible=True,
                             label=f"{what} (1 to {upload.num_frames}; segmentation runs on this one)")
        return path, selector

    def show_frame(self, image_file, frame):
        """Move the preview to another frame or slice (numbered from 1)."""
        if not image_file:
            return gr.skip()
        try:
            upload = read_upload_frame(image_file, frame=check_frame(frame), max_pixels=self.segmenter.max_pixels)
            preview = frame_preview(upload)
        except (InputError, ValueError) as err:
            raise user_error(err) from None
        name = f"{upload_stem(image_file, upload.kind)}_preview_{int(frame)}.png"
        return save_png(preview, self.segmenter.new_output_folder() / name)
