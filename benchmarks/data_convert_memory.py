"""Peak memory of the HAM10000 conversion: does streaming keep it bounded?

Builds a HAM10000-like raw folder (``HAM10000_images_part_{1,2}/ISIC_*.jpg``, masks in
``HAM10000_segmentations_lesion_tschandl/``, ``HAM10000_metadata.csv``) of small images, converts it with
``gms_hub.data.convert.convert_benchmark`` in a fresh process per size, and prints the peak resident set
size (RSS) the conversion added on top of the process after its imports. If conversion streams, the added
peak stays flat when the number of images grows from 1,000 to 10,015.

Usage:
    python benchmarks/data_convert_memory.py                      # 1,000 and 10,015 images, 1 process
    python benchmarks/data_convert_memory.py --num_proc 2 --sizes 10015 --image_size 600x450

Names come from the paper's split pickle when available (--splits, default ../shared/splits), otherwise
synthetic ``ISIC_*`` names with an 8,015 / 2,000 split.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPLITS = REPO.parent / "shared" / "splits" / "ham10000_train_test_names.pkl"


def _rss_kib(field: str) -> int:
    """VmRSS (current) or VmHWM (peak) of this process, in KiB, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status (Linux only)")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so imports do not hide the conversion's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_raw(root: Path, names, width: int, height: int) -> None:
    import numpy as np
    from PIL import Image

    masks = root / "HAM10000_segmentations_lesion_tschandl"
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i, name in enumerate(names):
        folder = root / f"HAM10000_images_part_{1 + i % 2}"
        folder.mkdir(exist_ok=True)
        cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, rng.uniform(0.15, 0.3) * height
        lesion = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        skin = np.stack([200 + 20 * np.sin(xx / 7.0 + i), 150 + 10 * np.cos(yy / 5.0), 130 + 0 * xx], -1)
        image = np.where(lesion[..., None], skin * 0.5, skin) + rng.normal(0, 6, skin.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{name}.jpg", quality=90)
        Image.fromarray(lesion.astype(np.uint8) * 255).save(masks / f"{name}_segmentation.png")
        lines.append(f"HAM_{i:07d},{name},{('nv', 'mel', 'bkl')[i % 3]},histo,50.0,male,back")
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")


def child(args) -> None:
    """Build the raw folder, then convert it while measuring RSS; prints one JSON line."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    # Everything the conversion imports, imported before measuring: the import cost is not conversion memory.
    import datasets  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import tqdm.auto  # noqa: F401

    from gms_hub.data.convert import convert_benchmark
    from gms_hub.data.ham10000 import HAM10000Converter
    from gms_hub.data.splits import load_split_lists

    work = Path(args.workdir)
    if args.splits and Path(args.splits).is_file():
        lists = load_split_lists(args.splits)
        all_train, all_test = list(lists.train), list(lists.test)
    else:
        names = [f"ISIC_{24306 + i:07d}" for i in range(10015)]
        all_train, all_test = names[:8015], names[8015:]
    n_train = min(len(all_train), round(args.child_size * len(all_train) / (len(all_train) + len(all_test))))
    train, test = all_train[:n_train], all_test[: args.child_size - n_train]
    split = work / "split.json"
    split.write_text(json.dumps({"train": train, "test": test}))
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    start = time.perf_counter()
    make_raw(work / "raw", train + test, width, height)
    build_s = time.perf_counter() - start

    rss_before = _rss_kib("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    convert_benchmark(HAM10000Converter(), work / "raw", work / "out", splits=split, num_proc=args.num_proc,
                      progress=False)
    convert_s = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    # Largest worker process (KiB on Linux); with num_proc=1 there are no workers to measure.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if args.num_proc > 1 else 0
    raw_mb = sum(p.stat().st_size for p in (work / "raw").rglob("*") if p.is_file()) / 1e6
    out_mb = sum(p.stat().st_size for p in (work / "out").rglob("*") if p.is_file()) / 1e6
    print(json.dumps({
        "images": len(train) + len(test), "rss_before_mib": rss_before / 1024, "peak_mib": peak / 1024,
        "added_peak_mib": (peak - rss_before) / 1024, "peak_reset": reset, "worker_peak_mib": children / 1024,
        "raw_mb": raw_mb, "parquet_mb": out_mb, "build_s": build_s, "convert_s": convert_s,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10015", help="Comma-separated numbers of images, one run each.")
    parser.add_argument("--image_size", default="64x48", help="WxH of the generated images (HAM10000: 600x450).")
    parser.add_argument("--num_proc", type=int, default=1)
    parser.add_argument("--splits", default=str(DEFAULT_SPLITS) if DEFAULT_SPLITS.is_file() else None)
    parser.add_argument("--child_size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size is not None:
        child(args)
        return

    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as work:
            command = [sys.executable, __file__, "--child_size", str(size), "--workdir", work,
                       "--image_size", args.image_size, "--num_proc", str(args.num_proc)]
            if args.splits:
                command += ["--splits", args.splits]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"HAM10000-like conversion, {args.image_size} px images, num_proc={args.num_proc}")
    print(f"{'images':>7} {'raw MB':>7} {'parquet MB':>10} {'RSS before':>11} {'peak':>8} {'added':>8} "
          f"{'worker peak':>11} {'convert s':>9}")
    for r in results:
        print(f"{r['images']:>7} {r['raw_mb']:>7.1f} {r['parquet_mb']:>10.1f} {r['rss_before_mib']:>8.0f} MiB "
              f"{r['peak_mib']:>4.0f} MiB {r['added_peak_mib']:>4.0f} MiB {r['worker_peak_mib']:>7.0f} MiB "
              f"{r['convert_s']:>9.1f}")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"images x{last['images'] / first['images']:.1f} -> added peak RSS x"
              f"{max(last['added_peak_mib'], 1) / max(first['added_peak_mib'], 1):.2f}")
    if not results[0]["peak_reset"]:
        print("note: /proc/self/clear_refs unavailable: 'peak' includes the imports' peak")


if __name__ == "__main__":
    main()
