"""The page's example gallery: thumbnails of the committed examples, and a click that loads one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import gradio as gr
from PIL import Image

from .page import preview_image

__all__ = ["ExampleGallery"]


class ExampleGallery:
    """The examples shown under the upload, rendered with the library's intensity rule (16-bit too).

    Args:
        examples (`Sequence[tuple]`): (file, model key, label) of each example.
        examples_dir (`Path`, *optional*): their folder; examples missing there are left out.
        output_dir (`Path`): where the thumbnails are written (in `examples/`).
    """

    def __init__(self, examples: Sequence[Tuple[str, str, str]], examples_dir: Optional[Path], output_dir: Path):
        self.examples, self.examples_dir, self.output_dir = list(examples), examples_dir, Path(output_dir)

    def available_examples(self):
        return [e for e in self.examples if self.examples_dir is not None and (self.examples_dir / e[0]).is_file()]

    def example_thumbnails(self):
        """(thumbnail PNG, label) for the gallery, rendered with the library's intensity rule (16-bit too)."""
        folder = self.output_dir / "examples"
        folder.mkdir(exist_ok=True)
        thumbs = []
        for name, _, label in self.available_examples():
            thumb = Image.fromarray(preview_image(self.examples_dir / name))
            thumb.thumbnail((160, 160))
            thumbs.append((str(folder / f"{Path(name).stem}.png"), label))
            thumb.save(thumbs[-1][0], format="PNG")
        return thumbs

    def load_example(self, evt: gr.SelectData):
        """A click on an example thumbnail: its file and its model."""
        name, key, _ = self.available_examples()[evt.index]
        return str(self.examples_dir / name), key, gr.update(value=1, visible=False)
