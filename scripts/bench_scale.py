"""Throughput of ganforge's step: plain PyTorch loop vs ganforge (1 process) vs 2-process ddp_gan and
deepspeed_gan (ZeRO-1, ZeRO-2), on CPU.

    python scripts/bench_scale.py                       # ring8's MLPs, batch 256 per rank, 1 thread per process
    python scripts/bench_scale.py --hidden 512 --batch 1024 --threads 1 --steps 300 --rounds 3

Every variant trains the same networks (MLP G and D, non-saturating loss, Adam, n_critic=1, EMA) on the same
2-D mixture batches, each in a fresh process with ``--threads`` torch threads per process; rounds interleave
the variants and the best round of each counts (the machine may be shared). Prints steps/s and images/s
(real images shown to D per second, all ranks), ganforge/plain (the framework's cost; floor 0.95) and each
2-process step time at the same per-rank batch over the 1-process one, and over two independent 1-process runs
at once (on a machine with as many cores as ranks, the latter is the cost of distribution alone; ceiling 1.10
for ddp_gan). DeepSpeed runs on its CPU accelerator over gloo, with the module's torch Adam (nothing compiled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Two 1-process runs at once: the cores, caches and memory bandwidth are as busy as under 2-process DDP, with no
# communication, so a 2-process variant's step time over theirs is the cost of distribution alone.
INDEPENDENT = "independent"
# variant -> (label, processes, trainer strategy)
VARIANTS = {"plain": ("plain PyTorch, 1 process", 1, None), "ganforge": ("ganforge, 1 process", 1, "auto"),
            "solo2": ("ganforge, 2 independent procs", 2, INDEPENDENT),
            "ddp2": ("ganforge ddp_gan, 2 procs", 2, "ddp_gan"),
            "zero1": ("deepspeed_gan ZeRO-1, 2 procs", 2, 1), "zero2": ("deepspeed_gan ZeRO-2, 2 procs", 2, 2)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="per rank")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--steps", type=int, default=300, help="timed generator steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="subset to run (the ratios need plain, ganforge and solo2)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def networks(args):
    from modules.nets.mlp import MLPDiscriminator, MLPGenerator

    return (MLPGenerator(latent_dim=2, hidden=args.hidden, layers=args.layers),
            MLPDiscriminator(hidden=args.hidden, layers=args.layers))


def data(args):
    from datamodules.mixture_datamodule import MixtureDataModule

    return MixtureDataModule(batch_size=args.batch, batches_per_epoch=args.warmup + args.steps + 10)


def plain(args) -> float:
    """The same algorithm as GAN.training_step, without a framework: seconds per timed step."""
    import torch

    from modules.ema import make_ema_copy, update_ema
    from modules.losses import NonSaturatingLoss

    g, d = networks(args)
    ema, loss = make_ema_copy(g), NonSaturatingLoss()
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    module = data(args)
    stamps = []
    for real in module.train_dataloader():
        with torch.no_grad():
            fake = g(torch.randn(args.batch, 2))
        d_loss = loss.discriminator(d(real), d(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d.requires_grad_(False)
        g_loss = loss.generator(d(g(torch.randn(args.batch, 2))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
        update_ema(ema, g, 0.999)
        stamps.append(time.perf_counter())
        if len(stamps) > args.warmup + args.steps:
            break
    return (stamps[-1] - stamps[args.warmup]) / args.steps


def ganforge(args, variant: str) -> dict | None:
    """ganforge's GAN under a Lightning Trainer: seconds per timed step, and per step in torch.distributed
    collectives (waiting for the other rank included); None on ranks other than 0."""
    import pytorch_lightning as pl
    import torch.distributed as dist

    import pipeline.strategies  # noqa: F401  registers ddp_gan
    from modules.gan import GAN
    from modules.losses import NonSaturatingLoss
    from pipeline.strategies.deepspeed_gan import DeepSpeedGANStrategy

    in_collectives = [0.0]

    def timing(call):
        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return call(*a, **k)
            finally:
                in_collectives[0] += time.perf_counter() - start
        return timed

    for name in ("all_reduce", "broadcast", "barrier", "all_gather_into_tensor", "reduce_scatter_tensor"):
        setattr(dist, name, timing(getattr(dist, name)))

    class Stamps(pl.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter())
            if len(self.times) == args.warmup + 1:
                in_collectives[0] = 0.0

    g, d = networks(args)
    model = GAN(g, d, loss=NonSaturatingLoss(), lr_g=1e-3, lr_d=1e-3, ema_kimg=10.0)
    stamps = Stamps()
    _, devices, strategy = VARIANTS[variant]
    if strategy == INDEPENDENT:
        devices, strategy = 1, "auto"
    if isinstance(strategy, int):
        strategy = DeepSpeedGANStrategy(zero_stage=strategy)
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         devices=devices, strategy=strategy,
                         max_steps=args.warmup + args.steps + 1, logger=False, callbacks=[stamps],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data(args))
    if not trainer.is_global_zero:
        return None
    steps = len(stamps.times) - 1 - args.warmup
    return {"seconds_per_step": (stamps.times[-1] - stamps.times[args.warmup]) / steps,
            "collective_seconds_per_step": in_collectives[0] / steps}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = {"seconds_per_step": plain(args)} if args.worker == "plain" else ganforge(args, args.worker)
    if result is not None:
        Path(args.out).write_text(json.dumps(result))


def run_variant(variant: str, argv: list[str]) -> dict:
    """Seconds per step of one run of ``variant`` (independent processes: the slower one's)."""
    copies = VARIANTS[variant][1] if VARIANTS[variant][2] == INDEPENDENT else 1
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"result{i}.json" for i in range(copies)]
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                   DS_ACCELERATOR="cpu", TORCH_EXTENSIONS_DIR=str(Path(tmp) / "torch_extensions"))
        procs = [subprocess.Popen([sys.executable, __file__, *argv, "--worker", variant, "--out", str(out)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for out in outs]
        for proc in procs:
            if proc.wait():
                raise subprocess.CalledProcessError(proc.returncode, proc.args)
        return max((json.loads(out.read_text()) for out in outs), key=lambda r: r["seconds_per_step"])


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    argv = sys.argv[1:]
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for variant in args.variants:
            result = run_variant(variant, argv)
            if variant not in best or result["seconds_per_step"] < best[variant]["seconds_per_step"]:
                best[variant] = result
    print(f"MLP G/D hidden={args.hidden} layers={args.layers}, batch {args.batch} per rank, {args.threads} "
          f"thread(s) per process, best of {args.rounds} rounds x {args.steps} steps, {os.cpu_count()} CPUs")
    print(f"{'variant':<31}{'ms/step':>9}{'steps/s':>9}{'images/s':>10}{'vs 1 proc':>11}{'vs 2 indep':>12}"
          f"{'collectives':>13}")
    one, two = (best[v]["seconds_per_step"] if v in best else float("nan") for v in ("ganforge", "solo2"))
    for variant in args.variants:
        label, ranks, strategy = VARIANTS[variant]
        s = best[variant]["seconds_per_step"]
        distributed = ranks > 1 and strategy != INDEPENDENT
        over_one = f"{s / one:.3f}" if ranks > 1 else ""
        over_two = f"{s / two:.3f}" if distributed else ""
        collectives = f"{1000 * best[variant]['collective_seconds_per_step']:.2f} ms" if distributed else ""
        print(f"{label:<31}{1000 * s:>9.2f}{1 / s:>9.1f}{ranks * args.batch / s:>10.0f}{over_one:>11}{over_two:>12}"
              f"{collectives:>13}")
    if "plain" in best:
        print(f"ganforge / plain throughput: {best['plain']['seconds_per_step'] / one:.3f}  (floor 0.95)")
    print("'vs 1 proc': step time over ganforge's 1-process one alone on the machine; 'vs 2 indep': over two "
          "independent 1-process runs sharing the machine as the 2 ranks do, the cost of distribution alone "
          "(ddp_gan ceiling 1.10); 'collectives': rank 0's time per step in torch.distributed calls, waiting "
          "included")


if __name__ == "__main__":
    main()
