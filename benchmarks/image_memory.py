"""Peak memory of one large image within the pixel limit, against the image's own uint8 size.

A PNG of a few kilobytes can hold tens of megapixels (a 7000x7000 gray PNG of near-constant pixels is ~50 KB), and
everything the reader and the preprocessing allocate scales with the pixels, not with the file. This script writes
such a PNG and, in this process, measures the peak resident memory (Linux /proc) each phase adds:

1. baseline: the image decoded as a uint8 array (`np.asarray(Image.open(...))`), i.e. its own uint8 size;
2. read: `gms_hub.io.reading.read_input` (header checks, decode, EXIF orientation);
3. read + preprocess: `read_input` then `gms_hub.models.processing.preprocess` to (1, 3, S, S) model input, the
   part of a prediction that scales with the image (the model itself works at S x S).

and prints each phase's peak as a ratio of the image's uint8 size (H x W x channels bytes).

Usage:
    python benchmarks/image_memory.py                       # 7000x7000 gray, S = 224
    python benchmarks/image_memory.py --side 4000 --rgb
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_convert_memory import _reset_peak, _rss_kib  # noqa: E402


def write_image(path: Path, side: int, rgb: bool) -> int:
    import numpy as np
    from PIL import Image

    pixels = np.zeros((side, side, 3) if rgb else (side, side), np.uint8)
    pixels[side // 4: side // 2, side // 4: side // 2] = 200  # a block, so the image is not all zeros
    Image.fromarray(pixels).save(path, optimize=True)
    return pixels.nbytes


def measure(label: str, fn, image_bytes: int) -> float:
    reset = _reset_peak()
    start = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    added = (_rss_kib("VmHWM") - start) * 1024
    del result
    print(f"{label:<20} peak added {added / 2**20:8.1f} MiB = {added / image_bytes:5.2f} x the uint8 image"
          f"   ({seconds:.1f} s){'' if reset else '  [peak not reset]'}")
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=7000, help="Width and height in pixels (default 7000: 49 MP).")
    parser.add_argument("--rgb", action="store_true", help="An RGB image instead of a gray one.")
    parser.add_argument("--image_size", type=int, default=224, help="Model input side S (default 224).")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from gms_hub.io.reading import read_input
    from gms_hub.models.processing import preprocess

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.png"
        image_bytes = write_image(path, args.side, args.rgb)
        print(f"{args.side}x{args.side} {'RGB' if args.rgb else 'gray'} PNG: {path.stat().st_size / 1024:.0f} KiB on "
              f"disk, {image_bytes / 2**20:.1f} MiB as uint8")
        baseline = measure("baseline (uint8)", lambda: np.asarray(Image.open(path)), image_bytes)
        read = measure("read_input", lambda: read_input(path), image_bytes)

        def read_and_preprocess():
            opened = read_input(path)
            return preprocess(list(opened.frames), args.image_size, opened.value_range)

        full = measure("read + preprocess", read_and_preprocess, image_bytes)
    print(f"ratios against the baseline: read_input {read / baseline:.2f}x, read + preprocess {full / baseline:.2f}x")


if __name__ == "__main__":
    main()
