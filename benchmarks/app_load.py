"""Load check for the Space: N concurrent /segment requests -> latency percentiles and the server's peak memory.

Starts `python app.py` offline (HF_HUB_OFFLINE=1) on a free 127.0.0.1 port, sends `--num_requests` requests from
`--concurrency` client threads (one gradio_client each) and samples the server's RSS (process tree) meanwhile.
Without `--demo_model` the bundled demo model is served, or, if it is missing, a tiny random GMS (64 px).

Usage:
    python benchmarks/app_load.py --num_requests 40 --concurrency 8 [--image_size 512] [--demo_model DIR]
    python benchmarks/app_load.py --url https://my-space.hf.space --num_requests 20   # latency only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Concurrent /segment requests against the GMS app.")
    parser.add_argument("--num_requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads sending at once")
    parser.add_argument("--model", default="busi")
    parser.add_argument("--image", default=None, help="image to send (default: a synthetic ultrasound of --image_size)")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--demo_model", default=None, help="GMS folder served as the demo model")
    parser.add_argument("--server_concurrency", type=int, default=None, help="GMS_CONCURRENCY for the server")
    parser.add_argument("--url", default=None, help="benchmark a running app instead (no memory numbers)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_model(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL

    from gms_hub import GMS

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64,
    )
    GMS(vae=vae, image_size=64, base_channels=16, channel_mult=(1, 1, 1, 1)).save_pretrained(folder, include_vae=True)
    return folder


def _start_server(args, workdir: Path):
    env = {k: v for k, v in os.environ.items() if k != "GMS_MODELS"}
    demo_model = args.demo_model
    if demo_model is None and not (ROOT / "gms_hub" / "demo_model" / "config.json").is_file():
        demo_model = str(_tiny_model(workdir / "tiny-gms"))
        print("gms_hub/demo_model is missing: serving a tiny random GMS (64 px) instead")
    if demo_model is not None:
        env["GMS_DEMO_MODEL"] = demo_model
    if args.server_concurrency is not None:
        env["GMS_CONCURRENCY"] = str(args.server_concurrency)
    port = _free_port()
    env.update(
        HF_HUB_OFFLINE="1", GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False", GMS_MODELS_FILE=str(workdir / "none.json"),
    )
    log = open(workdir / "app.log", "wb")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited:\n{(workdir / 'app.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=2):
                break
        except OSError:
            if time.perf_counter() - started > 180:
                process.kill()
                raise TimeoutError("app.py did not start within 180 s")
            time.sleep(0.2)
    return process, url, time.perf_counter() - started


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def _percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def main(args) -> dict:
    from gradio_client import Client, handle_file

    workdir = Path(tempfile.mkdtemp(prefix="gms-app-load-"))
    image = args.image
    if image is None:
        from gms_hub.data.synthetic import generate_example

        picture, _ = generate_example("ultrasound", np.random.default_rng(0), image_size=args.image_size)
        image = str(workdir / "input.png")
        picture.save(image)

    process = None
    startup_s = None
    url = args.url
    if url is None:
        process, url, startup_s = _start_server(args, workdir)
    server = psutil.Process(process.pid) if process else None
    try:
        clients = [Client(url, verbose=False) for _ in range(args.concurrency)]
        t0 = time.perf_counter()
        clients[0].predict(handle_file(image), args.model, 0.5, api_name="/segment")  # loads the model
        first_request_s = time.perf_counter() - t0
        idle_rss = _tree_rss(server) if server else None

        peak = [idle_rss or 0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss(server))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        if server:
            sampler.start()
        latencies, errors = [], []
        lock = threading.Lock()
        counter = iter(range(args.num_requests))

        def worker(client):
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                start = time.perf_counter()
                try:
                    client.predict(handle_file(image), args.model, 0.5, api_name="/segment")
                except Exception as err:  # count, don't stop the load
                    with lock:
                        errors.append(repr(err))
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        done.set()
        if server:
            sampler.join()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    results = {
        "url": url,
        "model": args.model,
        "image": args.image or f"synthetic ultrasound {args.image_size}x{args.image_size}",
        "num_requests": args.num_requests,
        "concurrency": args.concurrency,
        "ok": len(latencies),
        "errors": len(errors),
        "startup_s": None if startup_s is None else round(startup_s, 2),
        "first_request_s": round(first_request_s, 3),
        "p50_s": round(_percentile(latencies, 50), 3) if latencies else None,
        "p95_s": round(_percentile(latencies, 95), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "throughput_rps": round(len(latencies) / wall, 2),
        "idle_rss_mb": None if idle_rss is None else round(idle_rss / 2**20, 1),
        "peak_rss_mb": round(peak[0] / 2**20, 1) if server else None,
    }
    if errors:
        results["first_error"] = errors[0]
    return results


if __name__ == "__main__":
    arguments = parse_args()
    report = main(arguments)
    print(json.dumps(report, indent=2))
    if arguments.output:
        Path(arguments.output).write_text(json.dumps(report, indent=2) + "\n")
