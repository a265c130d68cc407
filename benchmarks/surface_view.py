"""Time of the Space's 3D surface view (`space.surface.write_surface_obj`) on a synthetic label volume.

Builds a label volume of `--shape` (slices, rows, columns) holding two classes (an ellipsoid and a smaller sphere
inside it, the kind of surface a segmentation gives), then in the same process times, `--repeats` times each:

1. baseline: the label volume's other product the page writes after Segment, the NIfTI mask (`nibabel`, gzip);
2. full: marching cubes at every voxel (step 1) and the OBJ text;
3. page: what the page runs, the step `surface_step` picks for this shape (1 up to 96^3 voxels).

Prints the median seconds, the vertex count, the OBJ size and the ratios against the baseline.

Usage:
    python benchmarks/surface_view.py                      # 128 x 128 x 128
    python benchmarks/surface_view.py --shape 64,256,256 --repeats 3
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402


def label_volume(shape) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    labels = np.zeros(shape, dtype=np.uint8)
    labels[(z / 0.8) ** 2 + (y / 0.6) ** 2 + (x / 0.7) ** 2 < 1] = 1
    labels[(z - 0.1) ** 2 + (y + 0.1) ** 2 + x**2 < 0.3**2] = 2
    return labels


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="128,128,128", help="slices,rows,columns")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import nibabel as nib

    from space import surface

    shape = tuple(int(v) for v in args.shape.split(","))
    labels = label_volume(shape)
    spacing = (2.5, 0.7, 0.7)
    names = ["outer", "inner"]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)

        def nifti():
            path = folder / "mask.nii.gz"
            nib.save(nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), np.eye(4)), path)
            return path

        def surface_at(step):
            def run():
                limit = surface.FULL_RESOLUTION_VOXELS
                surface.FULL_RESOLUTION_VOXELS = int(np.prod(shape)) + 1 if step == 1 else limit
                try:
                    return surface.write_surface_obj(labels, names, folder / f"surface{step}.obj", spacing)
                finally:
                    surface.FULL_RESOLUTION_VOXELS = limit
            return run

        page_step = surface.surface_step(shape)
        rows = [("baseline (NIfTI mask)", *timed(nifti, args.repeats)),
                ("full (step 1)", *timed(surface_at(1), args.repeats)),
                (f"page (step {page_step})", *timed(surface_at(page_step), args.repeats))]
        base = rows[0][1]
        print(f"label volume {shape[0]}x{shape[1]}x{shape[2]}, {len(names)} classes, median of {args.repeats}")
        for label, seconds, path in rows:
            extra = ""
            if path.suffix == ".obj":
                text = path.read_text()
                extra = f"  {text.count(chr(10) + 'v '):>8} vertices  {len(text) / 1e6:6.1f} MB"
            print(f"{label:<22} {seconds:7.3f} s  ({seconds / base:5.2f}x baseline){extra}")

if __name__ == "__main__":
    main()
