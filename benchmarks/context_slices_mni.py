"""2D against 2.5D (context_slices): per-class DSC on the test slabs and slice-to-slice consistency, one table.

For each model folder this script runs `train/evaluate.py` on the split (the project's evaluation: a model with
`context_slices` in its config.json is fed each slice with its neighbours, without a flag), keeping the predicted
masks, then measures on those masks the slice-to-slice consistency of `gms_hub.evaluation.consistency`: for every
pair of adjacent slices of the split (within a slab), the per-class DSC between the masks of slice k and k + 1,
against the same DSC of the ground-truth labels. The first model is the baseline of the comparison.

Usage (the demo-brain build and its K = 1 variant; README, "2D vs 2.5D"):
    python benchmarks/context_slices_mni.py --dataset /tmp/brain2/data \
        --models /tmp/brain2/demo_fp16 /tmp/brain_k1/demo_fp16 --output_dir /tmp/context_compare
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from gms_hub.data import load_gms_dataset  # noqa: E402
from gms_hub.evaluation.consistency import adjacent_slice_pairs, slice_consistency  # noqa: E402
from gms_hub.evaluation.protocol import _safe_file_name  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="Dataset folder (e.g. from `prepare mni152`).")
    parser.add_argument("--models", nargs="+", required=True, help="Model folders; the first is the baseline.")
    parser.add_argument("--output_dir", required=True, help="Where each model's evaluation folder and the JSON go.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch_size", type=int, default=4)
    return parser.parse_args(argv)


def label_maps(dataset: str, split: str, image_size: int, binary: bool) -> dict:
    """The split's ground truth at the evaluation resolution, as the protocol reads it (PIL NEAREST)."""
    maps = {}
    for row in load_gms_dataset(dataset, split=split):
        mask = np.asarray(row["mask"].convert("L").resize((image_size, image_size), resample=Image.NEAREST))
        maps[str(row["name"])] = (mask >= 128).astype(np.int64) if binary else mask.astype(np.int64)
    return maps


def evaluate(model: str, args, folder: Path) -> dict:
    command = [sys.executable, str(ROOT / "train" / "evaluate.py"), "--model", model, "--dataset", args.dataset,
               "--split", args.split, "--output_dir", str(folder), "--batch_size", str(args.batch_size)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads((folder / "metrics.json").read_text())


def main(args: argparse.Namespace) -> dict:
    output = Path(args.output_dir)
    results = []
    labels = None
    for number, model in enumerate(args.models):
        config = json.loads((Path(model) / "config.json").read_text())
        folder = output / f"{number}_{Path(model).name}"
        metrics = evaluate(model, args, folder)
        num_classes, image_size = metrics["num_classes"], metrics["image_size"]
        class_names = list(metrics["per_class"]) if num_classes > 1 else ["foreground"]
        if labels is None:
            labels = label_maps(args.dataset, args.split, image_size, binary=num_classes == 1)
        predicted = {}
        for name in labels:
            png = np.asarray(Image.open(folder / "masks" / f"{_safe_file_name(name)}.png"))
            predicted[name] = (png > 0).astype(np.int64) if num_classes == 1 else png.astype(np.int64)
        consistency = slice_consistency(predicted, labels, class_names)
        dsc = ({name: metrics["per_class"][name]["dsc_mean"] for name in class_names} if num_classes > 1
               else {"foreground": metrics["dsc_mean"]})
        results.append({"model": model, "context_slices": config.get("context_slices", 0), "dsc": dsc,
                        "dsc_mean": metrics["dsc_mean"], "consistency": consistency, "n": metrics["n"]})
    pairs = len(adjacent_slice_pairs(sorted(labels)))
    (output / "context_slices.json").write_text(json.dumps({"split": args.split, "adjacent_pairs": pairs,
                                                            "results": results}, indent=2))
    print_table(results, pairs, args.split)
    return {"results": results, "adjacent_pairs": pairs}


def print_table(results, pairs: int, split: str) -> None:
    classes = list(results[0]["dsc"])
    percent = lambda v: f"{100 * v:.1f}"  # noqa: E731
    header = ["model", "context_slices"] + [f"DSC {c}" for c in classes] + ["DSC mean"]
    header += [f"adjacent DSC {c}: predicted / label / mean abs diff" for c in classes]
    print(f"\n{split} split: {results[0]['n']} slices, {pairs} adjacent pairs; DSC in %, first row the baseline")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in results:
        cells = [_short(row["model"]) + (" (baseline)" if row is results[0] else ""), str(row["context_slices"])]
        cells += [percent(row["dsc"][c]) for c in classes] + [percent(row["dsc_mean"])]
        for c in classes:
            item = row["consistency"][c]
            cells.append(f"{percent(item['predicted'])} / {percent(item['label'])} / {percent(item['abs_difference'])}")
        print("| " + " | ".join(cells) + " |")
    base = results[0]
    for row in results[1:]:
        print(f"{_short(row['model'])} vs baseline: DSC mean {100 * (row['dsc_mean'] - base['dsc_mean']):+.1f} points; "
              + ", ".join(f"{c} mean abs diff {100 * (row['consistency'][c]['abs_difference'] - base['consistency'][c]['abs_difference']):+.1f}"
                          for c in classes))


def _short(model: str) -> str:
    """The model folder's last two parts (`brain_k1/demo_fp16`): builds name their folders alike."""
    return "/".join(Path(model).parts[-2:])


if __name__ == "__main__":
    main(parse_args())
