"""Peak memory of a 512x512x300 NIfTI volume: streamed slice batches against the whole volume as float32.

Writes a synthetic int16 CT-like volume (`.nii.gz`) to a temporary folder, then in the same process:

1. streaming: `read_medical_image` + `frames.batches(--batch_size)` + `gms_hub.models.processing.preprocess` of each
   batch to (B, 3, S, S), as the predict path will run it (the model itself adds the same per-batch cost to
   both paths and is left out);
2. predict: the whole CLI path, `python -m gms_hub.predict --input volume.nii.gz` (in process) with a tiny random
   GMS (the tests' tiny VAE, 64x64 input): read, preprocess, model, and the uint8 NIfTI mask it writes;
3. baseline: the whole volume materialised as float32 (`get_fdata(dtype=float32)`), what a reader that loads
   the volume first needs before any slice is processed.

Prints the peak resident memory each phase added on top of the process before it (Linux /proc) and the
ratios against the baseline. The volume-wide min..max pass of the reader is included in both streamed phases;
the tiny model is built and saved before any phase, so its weights are not counted.

Usage:
    python benchmarks/volume_memory.py                    # 512x512x300, batches of 16, 224x224
    python benchmarks/volume_memory.py --shape 256,256,100 --batch_size 8
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_convert_memory import _reset_peak, _rss_kib  # noqa: E402


def write_volume(path: Path, shape) -> None:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x**2 + y**2 < 0.8).astype(np.float32)
    data = np.empty(shape, dtype=np.int16)
    for k in range(shape[2]):  # HU-like: air -1000, tissue ~40, a moving bright blob
        blob = ((x - 0.3 * np.sin(k / 20)) ** 2 + y**2 < 0.05).astype(np.float32)
        data[..., k] = (-1000 + body * 1040 + blob * 300 + rng.normal(0, 10, shape[:2])).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 1.25, 1.0])), path)


def measure(label: str, fn):
    reset = _reset_peak()
    start_rss = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    added_mib = (_rss_kib("VmHWM") - start_rss) / 1024
    print(f"{label:<10} peak added {added_mib:8.1f} MiB   ({seconds:.1f} s){'' if reset else '  [peak not reset]'}")
    return added_mib, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="512,512,300", help="X,Y,Z of the synthetic volume.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--skip_predict", action="store_true", help="Leave out the predict phase (reader only).")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))

    import nibabel as nib
    import numpy as np
    import torch

    from gms_hub.io.reading import read_medical_image
    from gms_hub.models.processing import preprocess

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "volume.nii.gz"
        write_volume(path, shape)
        print(f"volume: {shape} int16, {path.stat().st_size / 2**20:.0f} MiB gzipped; batches of {args.batch_size}, "
              f"{args.image_size}x{args.image_size}; float32 volume = {np.prod(shape) * 4 / 2**20:.0f} MiB")

        def stream():
            image = read_medical_image(path)
            count, total = 0, 0.0
            for batch in image.frames.batches(args.batch_size):
                pixel_values, _ = preprocess(batch, args.image_size, value_range=image.value_range)  # (B, 3, S, S)
                count += pixel_values.shape[0]
                total += float(pixel_values.mean())
            return count

        def materialise():
            data = nib.load(path).get_fdata(dtype=np.float32)  # (X, Y, Z)
            return float(data[..., 0].mean())

        def predict_volume():
            from gms_hub import predict

            logging.disable(logging.INFO)  # the CLI's progress lines; errors still show
            code = predict.main(["--model", str(model_dir), "--input", str(path), "--output_dir", str(out_dir),
                                 "--batch_size", str(args.batch_size), "--device", "cpu"])
            assert code == 0 and nib.load(out_dir / "volume_mask.nii.gz").shape == shape
            return code

        torch.set_num_threads(1)
        model_dir, out_dir = Path(folder) / "tiny_gms", Path(folder) / "out"
        if not args.skip_predict:
            save_tiny_model(model_dir)
        streamed, count = measure("streaming", stream)
        assert count == shape[2], (count, shape)
        predicted = measure("predict", predict_volume)[0] if not args.skip_predict else None
        baseline, _ = measure("baseline", materialise)
        streamed, baseline = max(streamed, 0.1), max(baseline, 0.1)  # MiB; a tiny volume may fit in freed memory
    print(f"ratio: streaming peak / baseline peak = {streamed / baseline:.3f} ({baseline / streamed:.1f}x less memory)")
    if predicted is not None:
        predicted = max(predicted, 0.1)
        print(f"ratio: predict peak / baseline peak = {predicted / baseline:.3f} ({baseline / predicted:.1f}x less memory)")


def save_tiny_model(model_dir: Path) -> None:
    """A tiny random GMS (the tests' tiny VAE, 64x64 input) saved with its VAE, for the predict phase."""
    import torch
    from diffusers import AutoencoderKL

    from gms_hub import GMS

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16),
                        layers_per_block=1, norm_num_groups=4, sample_size=64)
    GMS(vae=vae, image_size=64, base_channels=16, channel_mult=(1, 1, 1, 1)).eval().save_pretrained(
        model_dir, include_vae=True)


if __name__ == "__main__":
    main()
