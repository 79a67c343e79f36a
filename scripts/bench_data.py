"""How fast the data path feeds training: decoded samples/s from JPEG shards on local disk and over loopback
HTTP, against the same images held as tensors in memory and read as single files (an ImageFolder-style
loop), against the DCGAN-64 training step on this CPU, and against the GPU steps the templates feed.

    python scripts/bench_data.py                              # 64 px and 256 px, workers 0/1/2, 5 rounds; ~10 min
    python scripts/bench_data.py --samples 2048 512 --rounds 3

The images are random crops of scikit-learn's two bundled photographs (real JPEG content, no download). Every
measurement is one pass over all the images; rounds interleave the sources (the machine may be shared) and the
table shows each one's median over the rounds with its spread (max - min over the median), and ratios as the
median of the per-round ratios. GPU feed: one data-loader worker is one core decoding, so the workers a GPU
needs are its step's images/s over the 1-worker rate (scaling with workers checked from 1 to 2; a GPU node has
the cores for the templates' 8 workers per GPU). Floors checked at the end: HTTP >= 80% of local disk; the
2-worker loader outruns the DCGAN-64 step on this CPU; 8 workers (the templates' num_workers) outrun each GPU step.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datamodules.image_decode import decode_image
from datamodules.webdataset_datamodule import WebDataModule
from modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from pipeline.commands import shards as shards_command

BATCH = 64
WORKERS = (0, 1, 2)
TEMPLATE_WORKERS = 8  # num_workers per GPU in configs/templates/
# Local shards decoded in this process, over its CPU time: one core's rate without the waits for a core that
# other programs hold, the rate of one worker on a node with a core per worker. Its fastest round counts (a core
# shared with other programs also decodes slower per CPU second: caches, hyper-threads).
PER_CORE = ("shards, per core", 0)
# GPU steps the templates' loaders feed: resolution -> (what, real images/s per GPU, where the figure comes from).
# DCGAN-64's rate is the model's FLOPs per image (counted by torch's FlopCounterMode: dcgan64_flops_per_image)
# at an assumed throughput; StyleGAN2-256's is published.
GPU_TFLOPS = 40.0  # DCGAN-64 in bf16 on one A100: ~13% of its 312 TFLOP/s peak (small convolutions, launch-bound)
STYLEGAN2_256 = ("StyleGAN2 256 px (stylegan2-ada-pytorch README: 21.6-24.2 s/kimg on 1 V100; A100 ~2x)",
                 2 * 1000 / 21.6)


def make_images(folder: str, count: int, resolution: int, seed: int = 0) -> list[str]:
    """``count`` JPEG crops of the bundled photos, ``resolution`` px square, in class folders by photo."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images()
    files = []
    for i in range(count):
        label = i % len(photos.images)
        photo = photos.images[label]
        side = int(rng.integers(min(photo.shape[:2]) // 4, min(photo.shape[:2])))
        top, left = (int(rng.integers(0, photo.shape[d] - side + 1)) for d in (0, 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((resolution, resolution),
                                                                              Image.Resampling.LANCZOS)
        photo_name = os.path.splitext(os.path.basename(photos.filenames[label]))[0]
        path = os.path.join(folder, photo_name, f"{i:06d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        crop.save(path, quality=90)
        files.append(path)
    return files


class ImageFiles(Dataset):
    """The torchvision ImageFolder pattern: one file opened and decoded per __getitem__."""

    def __init__(self, files: list[str], resolution: int):
        self.files, self.resolution = files, resolution
        self.labels = {name: i for i, name in enumerate(sorted({os.path.dirname(f) for f in files}))}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with open(self.files[i], "rb") as f:
            image = decode_image(f.read(), self.resolution, 3)
        return image, self.labels[os.path.dirname(self.files[i])]


def samples_per_second(loader, clock=time.perf_counter) -> float:
    """Steady-state rate of one pass: samples after the first batch over the ``clock`` time since it arrived."""
    iterator = iter(loader)
    next(iterator)
    started, samples = clock(), 0
    for batch in iterator:
        samples += len(batch[0] if isinstance(batch, (list, tuple)) else batch)
    return samples / (clock() - started)


def dcgan_step_rate(steps: int = 2) -> float:
    """Images/s of one DCGAN-64 discriminator step plus one generator step (Adam, batch 64), on all the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a loader worker's decoding is one core's; the DCGAN step uses them all
    try:
        return _dcgan_step_rate(steps)
    finally:
        torch.set_num_threads(threads)


def _dcgan_step_rate(steps: int) -> float:
    torch.manual_seed(0)
    g, d = DCGANGenerator(resolution=64), DCGANDiscriminator(resolution=64)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999)) for m in (g, d))
    loss = torch.nn.BCEWithLogitsLoss()
    real, ones, zeros = torch.rand(BATCH, 3, 64, 64) * 2 - 1, torch.ones(BATCH), torch.zeros(BATCH)

    def step() -> None:
        fake = g(torch.randn(BATCH, 100))
        opt_d.zero_grad()
        (loss(d(real).flatten(), ones) + loss(d(fake.detach()).flatten(), zeros)).backward()
        opt_d.step()
        opt_g.zero_grad()
        loss(d(fake).flatten(), ones).backward()
        opt_g.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - started)


def dcgan64_flops_per_image() -> float:
    """FLOPs of one D step plus one G step of the DCGAN-64 template's players, per real image."""
    from torch.utils.flop_counter import FlopCounterMode

    g, d = DCGANGenerator(latent_dim=100, resolution=64), DCGANDiscriminator(resolution=64)
    n = 4
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            fake = g(torch.randn(n, 100))
        (d(torch.rand(n, 3, 64, 64)).mean() + d(fake).mean()).backward()
        d.requires_grad_(False)
        d(g(torch.randn(n, 100))).mean().backward()
    return counter.get_total_flops() / n


def gpu_steps() -> dict[int, tuple[str, float]]:
    flops = dcgan64_flops_per_image()
    return {64: (f"DCGAN-64 template ({flops / 1e9:.2f} GFLOP/image at an assumed {GPU_TFLOPS:.0f} TFLOP/s, one A100)",
                 GPU_TFLOPS * 1e12 / flops),
            256: STYLEGAN2_256}


def serve(folder: str) -> tuple[subprocess.Popen, str]:
    """``python -m http.server`` on 127.0.0.1 in its own process, as a remote server would be."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/shards.json", timeout=1).close()
            return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the HTTP server did not start")


def bench(resolution: int, count: int, root: str, rounds: int) -> dict[tuple[str, int | None], list[float]]:
    """samples/s of every (source, workers), one value per round; rounds interleave all of them."""
    folder, shards = os.path.join(root, f"files{resolution}"), os.path.join(root, f"shards{resolution}")
    files = make_images(folder, count, resolution)
    shards_command.main(["--source", folder, "--out", shards, "--format", "jpg", "--quality", "90",
                         "--max-count", str(max(1, count // 8))])
    dataset = ImageFiles(files, resolution)
    memory = TensorDataset(torch.stack([dataset[i][0] for i in range(len(dataset))]),
                           torch.tensor([dataset[i][1] for i in range(len(dataset))]))
    loaders = {("memory tensors", None): DataLoader(memory, BATCH, shuffle=True)}
    server, base = serve(shards)
    try:
        for workers in WORKERS:
            loaders["image files", workers] = DataLoader(dataset, BATCH, shuffle=True, num_workers=workers,
                                                         persistent_workers=workers > 0)
            for name, index in (("shards local", os.path.join(shards, "shards.json")),
                                ("shards http", f"{base}/shards.json")):
                loaders[name, workers] = WebDataModule(index=index, resolution=resolution, channels=3, labels=True,
                                                       batch_size=BATCH, num_workers=workers,
                                                       shuffle_buffer=256).train_dataloader()
        # Round-robin passes: a burst of someone else's work should not land on one contender only.
        rates: dict[tuple[str, int | None], list[float]] = {key: [] for key in [*loaders, PER_CORE]}
        for _ in range(rounds):
            for key, loader in loaders.items():
                rates[key].append(samples_per_second(loader))
            rates[PER_CORE].append(samples_per_second(loaders["shards local", 0], time.process_time))
    finally:
        server.kill()
    return rates


def median_ratio(a: list[float], b: list[float]) -> tuple[float, float]:
    """Median of the per-round ratios a/b and their spread (max - min over the median)."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    middle = statistics.median(ratios)
    return middle, (max(ratios) - min(ratios)) / middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, nargs=2, default=(4096, 1024), metavar=("N64", "N256"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved passes per source; medians are shown")
    args = parser.parse_args()
    if min(args.samples) < 8 * BATCH:
        parser.error(f"--samples: at least {8 * BATCH} images per resolution, for a steady-state rate")
    if args.rounds < 3:
        parser.error("--rounds: at least 3, for a median and a spread")
    torch.set_num_threads(1)  # a loader worker's decoding is one core's; the DCGAN step uses them all
    step_rates = [dcgan_step_rate(steps=4) for _ in range(3)]
    gpu = gpu_steps()
    failures = []
    with tempfile.TemporaryDirectory() as root:
        for resolution, count in zip((64, 256), args.samples, strict=True):
            rates = bench(resolution, count, root, args.rounds)
            median = {key: statistics.median(values) for key, values in rates.items()}
            memory = median["memory tensors", None]
            print(f"\n{resolution}x{resolution} JPEG, {count} images, batch {BATCH}, {os.cpu_count()} CPU cores, "
                  f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
            print(f"{'source':<16}{'workers':>8}{'samples/s':>11}{'spread':>8}{'/memory':>9}{'/files':>8}"
                  f"{'http/local':>12}")
            for (name, workers), values in rates.items():
                value = median[name, workers]
                files = f"{value / median['image files', workers]:.2f}" if name.endswith(("files", "local", "http")) \
                    else ""
                http = ""
                if name == "shards http":
                    ratio, spread = median_ratio(values, rates["shards local", workers])
                    http = f"{ratio:.2f}±{spread / 2 * ratio:.2f}"
                    if ratio < 0.8:
                        failures.append(f"{resolution} px, {workers} workers: http/local {ratio:.2f} < 0.80")
                spread = (max(values) - min(values)) / value
                print(f"{name:<16}{'' if workers is None else workers:>8}{value:>11.0f}{100 * spread:>7.0f}%"
                      f"{value / memory:>9.2f}{files:>8}{http:>12}")
            one, two = rates["shards local", 1], rates["shards local", 2]
            per_worker = max(rates[PER_CORE])  # other programs only ever slow a pass: the fastest is the core's
            scaling, _ = median_ratio(two, one)
            what, gpu_rate = gpu[resolution]
            needed = math.ceil(gpu_rate / per_worker)
            print(f"GPU feed: one core decodes {per_worker:.0f} samples/s (fastest round; spread "
                  f"{100 * (max(rates[PER_CORE]) - min(rates[PER_CORE])) / per_worker:.0f}%; 2 workers: {scaling:.2f}x "
                  f"1 worker on this machine's {os.cpu_count()} shared cores); {what}: {gpu_rate:.0f} images/s "
                  f"per GPU needs {needed} worker(s); the templates' {TEMPLATE_WORKERS} workers feed "
                  f"{TEMPLATE_WORKERS * per_worker / gpu_rate:.1f}x it")
            if TEMPLATE_WORKERS * per_worker < gpu_rate:
                failures.append(f"{resolution} px: {TEMPLATE_WORKERS} workers ({TEMPLATE_WORKERS * per_worker:.0f}/s) "
                                f"are slower than the GPU step ({gpu_rate:.0f}/s)")
            if resolution == 64:
                step_rate = statistics.median(step_rates)
                ratio, spread = median_ratio(two, [step_rate] * len(two))
                print(f"DCGAN-64 training step on this CPU (D + G, batch {BATCH}): {step_rate:.0f} samples/s; "
                      f"shards with 2 workers feed {ratio:.1f}x that (spread {100 * spread:.0f}%)")
                if ratio < 1:
                    failures.append(f"2-worker loader {ratio:.2f}x the DCGAN-64 CPU step")
    print("\nfloors: " + ("all met" if not failures else "MISSED: " + "; ".join(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
