"""How fast the data path feeds training: decoded samples/s from JPEG shards on local disk and over loopback
HTTP, against the same images held as tensors in memory and read as single files (an ImageFolder-style
loop), and against the DCGAN-64 training step.

    python scripts/bench_data.py                     # 64 px and 256 px, workers 0/1/2; a few minutes
    python scripts/bench_data.py --samples 1024 256  # fewer images

The images are random crops of scikit-learn's two bundled photographs (real JPEG content, no download).
Floors checked at the end: HTTP >= 80% of local disk; the loader with 2 workers outruns the DCGAN-64 step.
"""

from __future__ import annotations

import argparse
import os
import socket
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


def samples_per_second(loader) -> float:
    """Steady-state rate of one pass: samples after the first batch over the time since it arrived."""
    iterator = iter(loader)
    next(iterator)
    started, samples = time.perf_counter(), 0
    for batch in iterator:
        samples += len(batch[0] if isinstance(batch, (list, tuple)) else batch)
    return samples / (time.perf_counter() - started)


def dcgan_step_rate(steps: int = 2) -> float:
    """Images/s of one DCGAN-64 discriminator step plus one generator step (Adam, batch 64)."""
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


def bench(resolution: int, count: int, root: str, repeats: int) -> list[tuple[str, int | None, float]]:
    folder, shards = os.path.join(root, f"files{resolution}"), os.path.join(root, f"shards{resolution}")
    files = make_images(folder, count, resolution)
    shards_command.main(["--source", folder, "--out", shards, "--format", "jpg", "--quality", "90",
                         "--max-count", str(max(1, count // 8))])
    dataset = ImageFiles(files, resolution)
    memory = TensorDataset(torch.stack([dataset[i][0] for i in range(len(dataset))]),
                           torch.tensor([dataset[i][1] for i in range(len(dataset))]))
    in_memory = DataLoader(memory, BATCH, shuffle=True)
    rows = [("memory tensors", None, max(samples_per_second(in_memory) for _ in range(repeats)))]
    server, base = serve(shards)
    try:
        for workers in WORKERS:
            loaders = {"image files": DataLoader(dataset, BATCH, shuffle=True, num_workers=workers,
                                                 persistent_workers=workers > 0)}
            for name, index in (("shards local", os.path.join(shards, "shards.json")),
                                ("shards http", f"{base}/shards.json")):
                loaders[name] = WebDataModule(index=index, resolution=resolution, channels=3, labels=True,
                                              batch_size=BATCH, num_workers=workers,
                                              shuffle_buffer=256).train_dataloader()
            # Round-robin passes, the best of each kept: the machine may be shared, and a burst of
            # someone else's work should not land on one contender only.
            best = dict.fromkeys(loaders, 0.0)
            for _ in range(repeats):
                for name, loader in loaders.items():
                    best[name] = max(best[name], samples_per_second(loader))
            rows += [(name, workers, rate) for name, rate in best.items()]
    finally:
        server.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, nargs=2, default=(2048, 512), metavar=("N64", "N256"))
    parser.add_argument("--repeats", type=int, default=3, help="passes per measurement; the best counts")
    args = parser.parse_args()
    if min(args.samples) < 4 * BATCH:
        parser.error(f"--samples: at least {4 * BATCH} images per resolution, for a steady-state rate")
    torch.set_num_threads(os.cpu_count() or 1)
    step_rate = dcgan_step_rate()
    failures = []
    with tempfile.TemporaryDirectory() as root:
        for resolution, count in zip((64, 256), args.samples, strict=True):
            rows = bench(resolution, count, root, args.repeats)
            rate = {(name, workers): value for name, workers, value in rows}
            memory = rate["memory tensors", None]
            print(f"\n{resolution}x{resolution} JPEG, {count} images, batch {BATCH}, {os.cpu_count()} CPU "
                  f"cores, load average {os.getloadavg()[0]:.1f}")
            print(f"{'source':<16}{'workers':>8}{'samples/s':>11}{'/memory':>9}{'/files':>8}{'http/local':>12}")
            for name, workers, value in rows:
                files = f"{value / rate['image files', workers]:.2f}" if workers is not None else ""
                http = (f"{value / rate['shards local', workers]:.2f}" if name == "shards http" else "")
                print(f"{name:<16}{'' if workers is None else workers:>8}{value:>11.0f}{value / memory:>9.2f}"
                      f"{files:>8}{http:>12}")
            for workers in WORKERS:
                ratio = rate["shards http", workers] / rate["shards local", workers]
                if ratio < 0.8:
                    failures.append(f"{resolution} px, {workers} workers: http/local {ratio:.2f} < 0.80")
            if resolution == 64:
                loader = rate["shards local", 2]
                print(f"DCGAN-64 training step (D + G, batch {BATCH}): {step_rate:.0f} samples/s; "
                      f"shards with 2 workers feed {loader / step_rate:.1f}x that")
                if loader < step_rate:
                    failures.append(f"2-worker loader {loader:.0f}/s is slower than the DCGAN-64 step")
    print("\nfloors: " + ("all met" if not failures else "MISSED: " + "; ".join(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
