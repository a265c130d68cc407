"""One visitor's large job must not stall the others: a small /segment's latency alone and while a large
/segment_batch runs, against the same server in the same run.

Starts `python app.py` offline (as `benchmarks/app_load.py` does), then:

1. baseline: `--num_small` small /segment requests one after another, nothing else running;
2. under load: the same requests while one /segment_batch of `--batch_files` images of `--batch_side` pixels runs
   (the batch tab has its own queue, one job at a time, beside the single-image queue).

Prints the median latency of each phase, their ratio, and how long the batch took (a ratio near 1 with a batch
much longer than the small requests means the batch did not hold them up; CPU sharing still slows both).

Usage:
    python benchmarks/app_isolation.py [--num_small 6] [--batch_files 40] [--batch_side 512] [--demo_model DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from app_load import _start_server  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Small-request latency while a large batch runs.")
    parser.add_argument("--num_small", type=int, default=6)
    parser.add_argument("--batch_files", type=int, default=40)
    parser.add_argument("--batch_side", type=int, default=512)
    parser.add_argument("--model", default="busi")
    parser.add_argument("--demo_model", default=None, help="GMS folder served as the demo model")
    parser.add_argument("--server_concurrency", type=int, default=None)
    return parser.parse_args(argv)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(args) -> dict:
    from gradio_client import Client, handle_file
    from PIL import Image

    workdir = Path(tempfile.mkdtemp(prefix="gms-app-isolation-"))
    rng = np.random.default_rng(0)
    small = workdir / "small.png"
    Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(small)
    batch = []
    for k in range(args.batch_files):
        batch.append(workdir / f"large_{k}.png")
        Image.fromarray(rng.integers(0, 256, (args.batch_side, args.batch_side), dtype=np.uint8)).save(batch[-1])
    process, url, _ = _start_server(args, workdir)
    try:
        client, batch_client = Client(url, verbose=False), Client(url, verbose=False)

        def one_small():
            client.predict(handle_file(str(small)), args.model, 0.5, api_name="/segment")

        one_small()  # loads the model
        alone = [_timed(one_small) for _ in range(args.num_small)]
        batch_time = {}

        def run_batch():
            batch_time["s"] = _timed(lambda: batch_client.predict(
                [handle_file(str(p)) for p in batch], args.model, 0.5, api_name="/segment_batch"))

        thread = threading.Thread(target=run_batch)
        thread.start()
        time.sleep(1.0)  # the batch has started
        loaded = [_timed(one_small) for _ in range(args.num_small)]
        batch_running = thread.is_alive()
        thread.join()
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"alone_s": statistics.median(alone), "during_batch_s": statistics.median(loaded),
              "batch_s": batch_time.get("s"), "batch_still_running": batch_running}
    print(f"small /segment alone:          median {result['alone_s']:.2f} s over {args.num_small}")
    print(f"small /segment during a batch: median {result['during_batch_s']:.2f} s over {args.num_small} "
          f"(batch still running after them: {batch_running})")
    print(f"the batch ({args.batch_files} x {args.batch_side}px) took {result['batch_s']:.1f} s")
    print(f"ratio: {result['during_batch_s'] / result['alone_s']:.2f}x the latency alone")
    return result


if __name__ == "__main__":
    main(parse_args())
