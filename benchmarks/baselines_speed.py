"""Inference time per image of GMS, the U-Net and the Otsu floor, measured in one run on the same images.

    python benchmarks/baselines_speed.py --gms demo-brain --unet outputs/bench/unet-mni \\
        --dataset outputs/mni152 --image_size 128 --repeats 3

Each method segments the same preprocessed test images (batch 1, the protocol's size) in alternating rounds, so
that load on a shared machine hits them alike; the script prints the median seconds per image of each and its ratio
to the U-Net measured in the same run, plus the CPU load average before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gms", default="demo-brain", help="Anything gms_hub.load_model accepts.")
    parser.add_argument("--unet", required=True, help="Output folder of train/train_unet.py.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--num_images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from safetensors.torch import load_file

    from gms_hub import load_model
    from gms_hub.data import EvalTransform, collate_batch, load_gms_dataset

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    gms = load_model(args.gms).eval()
    config = json.loads((Path(args.unet) / "config.json").read_text())
    unet_module = _script("train_unet")
    unet = unet_module.UNetSegmenter(config["image_size"], config["num_classes"], features=config["features"]).eval()
    unet.load_state_dict(load_file(str(Path(args.unet) / "model.safetensors")))
    otsu_module = _script("otsu_baseline")
    otsu = otsu_module.OtsuSegmenter(args.image_size, list(range(gms.num_classes + 1)), gms.num_classes)

    dataset = load_gms_dataset(args.dataset, split=args.split)
    dataset = dataset.select(range(min(args.num_images, len(dataset))))
    batch = collate_batch(list(dataset.with_transform(EvalTransform(image_size=args.image_size, num_classes=gms.num_classes))))
    images = batch["pixel_values"]  # (N, 3, S, S)
    methods = {"gms": gms, "unet": unet, "otsu": otsu}
    times = {name: [] for name in methods}
    load_before = os.getloadavg()
    with torch.inference_mode():
        for model in methods.values():  # warm-up
            model(images[:1])
        for _ in range(args.repeats):
            for name, model in methods.items():
                started = time.perf_counter()
                for i in range(len(images)):
                    model(images[i : i + 1])
                times[name].append((time.perf_counter() - started) / len(images))
    load_after = os.getloadavg()
    base = statistics.median(times["unet"])
    print(f"{len(images)} images at {args.image_size} px, batch 1, {args.repeats} alternating rounds, "
          f"{torch.get_num_threads()} threads; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:5s} {median * 1000:8.1f} ms per image   {median / base:6.2f}x the U-Net")


if __name__ == "__main__":
    main()
