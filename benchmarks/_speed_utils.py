"""Shared helpers of benchmarks/infer_speed.py and benchmarks/train_speed.py: model, inputs, timing, memory."""

from __future__ import annotations

import os
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch


def add_common_args(parser) -> None:
    parser.add_argument("--vae", default=None, help="Hub id, local folder or single .ckpt/.safetensors of the VAE. "
                        "Default: the SD2 VAE config with RANDOM weights (speed does not depend on weight values; "
                        "agreement does: random weights give probabilities near 0.5, a harsh test for masks).")
    parser.add_argument("--vae_subfolder", default=None, help="Subfolder of --vae holding the VAE (e.g. 'vae').")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7, help="Timed rounds; each round times every path once, "
                        "in turn, so the eager/fast ratio is a median of alternating pairs.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU).")
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend of the *compile paths "
                        "('eager' only checks that they trace, quickly).")


def resolve_paths(
    parser, args, paths, default_paths: Dict[str, str], fallback_paths: str, default_batch: Dict[str, int]
):
    """Fill in the device-dependent defaults of --batch_size and --paths (`fallback_paths` on a device type
    `default_paths` does not name); 'eager' (the baseline) comes first."""
    device_type = torch.device(args.device).type
    args.batch_size = args.batch_size or default_batch.get(device_type, default_batch["cpu"])
    chosen = args.paths or default_paths.get(device_type, fallback_paths)
    names = [p.strip() for p in chosen.split(",") if p.strip()]
    unknown = [p for p in names if p not in paths]
    if unknown:
        parser.error(f"unknown --paths {unknown}; choose from {list(paths)}")
    args.paths = ["eager"] + [p for p in names if p != "eager"]
    return args


def build_model(args):
    """A GMS in float32 eval mode: the given VAE, or the SD2 VAE architecture with random weights."""
    from diffusers import AutoencoderKL

    from gms_hub import GMS
    from gms_hub.models.vae import sd2_vae_config

    torch.manual_seed(args.seed)
    if args.vae is None:
        config = {k: v for k, v in sd2_vae_config().items() if not k.startswith("_")}
        vae = AutoencoderKL(**config).eval()
        model = GMS(vae=vae, image_size=args.image_size)
    else:
        model = GMS(vae=args.vae, vae_subfolder=args.vae_subfolder, image_size=args.image_size)
    return model.to(args.device).eval()


# Paths that swap the frozen backbone: their outputs are another model's, so no agreement with eager is reported.
BACKBONE_PATHS = ("taesd",)


def with_taesd_backbone(model, seed: int = 0):
    """A copy of `model` whose frozen VAE is a diffusers `AutoencoderTiny` with its default config, which is
    TAESD's architecture (`madebyollin/taesd`), and RANDOM weights; the LMM is the same."""
    import copy

    from diffusers import AutoencoderTiny

    tiny = copy.deepcopy(model)
    torch.manual_seed(seed)
    vae = AutoencoderTiny().eval().requires_grad_(False)  # defaults = TAESD: 64 channels, (1,3,3,3)/(3,3,3,1) blocks
    tiny.vae = vae.to(next(model.parameters()).device)
    return tiny


def start_run(args):
    """Apply the thread and cuDNN settings, print the run's header, and build the model."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"machine: {machine_description(args.device)}")
    print(f"inputs: batch {args.batch_size}, {args.image_size}x{args.image_size}, VAE "
          f"{args.vae or 'SD2 architecture, random weights'}; {args.repeats} alternating rounds")
    return build_model(args)


def make_images(batch_size: int, image_size: int, seed: int, device) -> torch.Tensor:
    """Smooth random images in [-1, 1] (low-resolution noise, upsampled bilinearly), (B, 3, S, S)."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(batch_size, 3, max(2, image_size // 16), max(2, image_size // 16), generator=generator)
    images = torch.nn.functional.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (images * 2 - 1).to(device)


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def release_cpu_memory_eagerly() -> bool:
    """Make glibc return every large (>= 128 KiB) freed block to the OS, so that process RSS follows live tensors.

    By default glibc raises its mmap threshold after big frees and keeps the memory, so RSS only shows the
    all-time peak. Call this after the timed rounds: page-faulting fresh memory on every call slows CPU code.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, which also turns off the dynamic adjustment
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def peak_memories(calls: Dict[str, Callable[[], object]], device) -> Dict[str, Dict[str, float]]:
    """Peak memory (see `peak_memory`) of one call of each path, measured after the timed rounds."""
    release_cpu_memory_eagerly()
    calls["eager"]()  # the first call after the allocator change pays one-off costs: leave it unmeasured
    memory: Dict[str, Dict[str, float]] = {}
    for name, call in calls.items():
        memory[name] = {}
        with peak_memory(device, memory[name]):
            call()
    return memory


@contextmanager
def peak_memory(device, result: Dict[str, float]):
    """Peak memory above the level at entry, in MiB: CUDA allocator peak, or sampled process RSS on CPU
    (meaningful after `release_cpu_memory_eagerly`)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield
        torch.cuda.synchronize()
        result["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    base = _rss_bytes()
    if base is None:
        yield
        result["peak_mib"] = float("nan")
        return
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes() or 0)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        result["peak_mib"] = (max(peak[0], _rss_bytes() or 0) - base) / 2**20


def alternate(steps: Dict[str, Callable[[], object]], repeats: int, device, log=print) -> Dict[str, List[float]]:
    """Time every step once per round, in turn, for `repeats` rounds; returns the seconds per call of each."""
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for round_index in range(repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device))
        log(f"round {round_index + 1}/{repeats}: " + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()))
    return times


def median_ratio(baseline: List[float], other: List[float]) -> float:
    """Median over rounds of baseline_time / other_time: the speed-up, robust to load changes between rounds."""
    return statistics.median(b / o for b, o in zip(baseline, other))


def print_table(rows: List[Dict[str, object]], columns: List[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def machine_description(device) -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    model = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {torch.get_num_threads()} threads, load average {load:.2f} (torch {torch.__version__})"
