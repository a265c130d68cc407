"""Cost of posterior sampling and test-time augmentation (`gms_hub.inference.uncertainty`), against the paper's single pass.

Times `predict_probabilities` on the same images for N = 0, 4, 8, 16 posterior samples, without and with TTA
(the 8 flips and quarter turns), in alternating rounds, and prints the time per image and its ratio to N = 0
without TTA in the same run (median over rounds of the per-round ratios), next to the number of decodes per image.

    python benchmarks/uncertainty_cost.py                   # the bundled demo model (128 px), CPU
    python benchmarks/uncertainty_cost.py --samples 0,4 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics

import torch

from _speed_utils import alternate, machine_description, make_images, median_ratio, print_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GMS folder or Hub id (default: gms_hub.DEMO_MODEL_PATH).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", default="0,4,8,16", help="Comma-separated values of num_samples.")
    parser.add_argument("--no_tta", action="store_true", help="Skip the TTA configurations.")
    parser.add_argument("--images", type=int, default=2, help="Images per call.")
    parser.add_argument("--batch_size", type=int, default=8, help="Decodes per chunk (predict_probabilities).")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating timed rounds.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU).")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(args) -> None:
    from gms_hub import DEMO_MODEL_PATH, GMS
    from gms_hub.inference.uncertainty import num_passes, predict_probabilities

    if args.threads:
        torch.set_num_threads(args.threads)
    model = GMS.from_pretrained(args.model or DEMO_MODEL_PATH, device=args.device).eval()
    images = make_images(args.images, model.image_size, args.seed, args.device)  # (B, 3, S, S)
    samples = [int(s) for s in args.samples.split(",")]
    if 0 not in samples:
        samples.insert(0, 0)  # the baseline
    configs = [(n, False) for n in samples] + ([] if args.no_tta else [(n, True) for n in samples])

    def step(n, tta):
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        return lambda: predict_probabilities(model, images, num_samples=n, tta=tta, generator=generator,
                                             batch_size=args.batch_size)

    steps = {f"N={n}{'+tta' if tta else ''}": step(n, tta) for n, tta in configs}
    print(f"machine: {machine_description(args.device)}; torch threads {torch.get_num_threads()}")
    print(f"model: {args.model or 'demo model'} ({model.image_size} px); {args.images} images per call, "
          f"batch_size {args.batch_size}; {args.repeats} alternating rounds after one warm-up call each")
    for call in steps.values():
        call()  # warm-up
    times = alternate(steps, args.repeats, args.device)
    baseline = times["N=0"]
    rows = []
    for (n, tta), name in zip(configs, steps):
        passes = num_passes(n, tta)
        ratio = 1.0 / median_ratio(baseline, times[name])  # time / baseline time
        rows.append({
            "config": name, "decodes/image": passes,
            "s/image": f"{statistics.median(times[name]) / args.images:.4f}",
            "x N=0": f"{ratio:.2f}", "x N=0 per decode": f"{ratio / passes:.2f}",
        })
    print_table(rows, ["config", "decodes/image", "s/image", "x N=0", "x N=0 per decode"])


if __name__ == "__main__":
    main(parse_args())
