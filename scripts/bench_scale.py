"""Throughput of ganforge's step: plain PyTorch loop vs ganforge (1 process) vs 2-process ddp_gan and
deepspeed_gan (ZeRO-1, ZeRO-2), on CPU.

    python scripts/bench_scale.py                       # ring8's MLPs, batch 256 per rank, 1 thread per process
    python scripts/bench_scale.py --hidden 512 --batch 1024 --threads 1 --steps 300 --rounds 3
    python scripts/bench_scale.py --variants plain ganforge ganforge_bar --rounds 7            # framework cost
    python scripts/bench_scale.py --model dcgan32 --variants plain ganforge ganforge_bar --rounds 5
    python scripts/bench_scale.py --variants solo2 ddp2 ddp2_no_overlap --rounds 5             # ddp_gan overlap
    python scripts/bench_scale.py --model dcgan32 --variants ganforge compiled --rounds 2 --steps 40 --warmup 10

Every variant trains the same networks (``--model mlp``: MLP G and D; ``dcgan32``: the quickstart preset's
DCGAN-32 players and batch, configs/dcgan.yaml; non-saturating loss, Adam, n_critic=1, EMA, D frozen in G's step)
on the same batches (2-D mixture batches; for dcgan32 images held in memory), each in a fresh process with
``--threads`` torch threads per process; rounds interleave the variants (the machine may be shared). Prints, per
variant, the best round and the spread of the rounds, steps/s and images/s (real images shown to D per second,
all ranks); ganforge/plain throughput (the framework's cost; floors 0.97 for the MLPs, 0.98 for dcgan32) as the
best rounds' ratio and the range of the per-round ratios (plain and ganforge of one round ran back to back);
and each 2-process step time at the same per-rank batch over the 1-process one, and over two independent
1-process runs at once (on a machine with as many cores as ranks, the latter is the cost of distribution alone;
ceiling 1.10 for ddp_gan). ``compiled`` is ganforge with ``model.compile`` (``--compile-mode``): its step
speed-up and its compile time (its first batch's time over the eager first batch's). ``ganforge_bar`` is
ganforge with Lightning's default progress bar (to a discarded stderr), the others run without one.
DeepSpeed runs on its CPU accelerator over gloo, with the module's torch Adam (nothing compiled).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from preset_players import preset_players

REPO = Path(__file__).resolve().parents[1]
# Two 1-process runs at once: the cores, caches and memory bandwidth are as busy as under 2-process DDP, with no
# communication, so a 2-process variant's step time over theirs is the cost of distribution alone.
INDEPENDENT = "independent"
# variant -> (label, processes, trainer strategy)
VARIANTS = {"plain": ("plain PyTorch, 1 process", 1, None),
            "lightning": ("plain step in Lightning", 1, None), "ganforge": ("ganforge, 1 process", 1, "auto"),
            "ganforge_bar": ("ganforge + progress bar", 1, "auto"),
            "compiled": ("ganforge, model.compile", 1, "auto"),
            "solo2": ("ganforge, 2 independent procs", 2, INDEPENDENT),
            "ddp2": ("ganforge ddp_gan, 2 procs", 2, "ddp_gan"),
            "ddp2_no_overlap": ("ddp_gan, no overlap, 2 procs", 2, "ddp_gan"),
            "zero1": ("deepspeed_gan ZeRO-1, 2 procs", 2, 1), "zero2": ("deepspeed_gan ZeRO-2, 2 procs", 2, 2)}
# --model -> (preset whose players and batch are used, default batch, learning rate, EMA half-life in kimg)
MODELS = {"mlp": (None, 256, 1e-3, 10.0), "dcgan32": ("dcgan", None, None, None),
          "resnet32": ("sngan_hinge_resnet", None, None, None)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="mlp",
                        help="mlp: MLP players (--hidden, --layers); dcgan32, resnet32: the players and batch of "
                             "configs/dcgan.yaml, configs/sngan_hinge_resnet.yaml")
    parser.add_argument("--compile-mode", help="torch.compile mode of the 'compiled' variant (default: its default)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, help="per rank (default: 256 for mlp, the preset's for dcgan32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--steps", type=int, default=300, help="timed generator steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="subset to run (the ratios need plain, ganforge and solo2)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def players(args) -> tuple:
    """(G, D, GAN settings: lr_g, lr_d, betas_g, betas_d, ema_kimg) of ``--model``, seeded."""
    import torch

    from modules.nets.mlp import MLPDiscriminator, MLPGenerator
    from modules.regularizers import apply_spectral_norm

    torch.manual_seed(0)
    preset, _, lr, ema_kimg = MODELS[args.model]
    if preset is None:
        return (MLPGenerator(latent_dim=2, hidden=args.hidden, layers=args.layers),
                MLPDiscriminator(hidden=args.hidden, layers=args.layers),
                {"lr_g": lr, "lr_d": lr, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999), "ema_kimg": ema_kimg})
    g, d, settings, _ = preset_players(preset)
    if settings.get("spectral_norm"):  # on the net itself, so that the plain loop has it too
        d = apply_spectral_norm(d)
    return g, d, {k: settings[k] for k in ("lr_g", "lr_d", "betas_g", "betas_d") if k in settings} | {
        "ema_kimg": settings.get("ema_kimg", 10.0)}


def batch_size(args) -> int:
    preset, batch, _, _ = MODELS[args.model]
    return args.batch or batch or preset_players(preset)[3]


def data(args):
    """The model's training batches: 2-D mixture batches, or random images held in memory (no decoding)."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader

    from datamodules.mixture_datamodule import MixtureDataModule

    batches = args.warmup + args.steps + 10
    if MODELS[args.model][0] is None:
        return MixtureDataModule(batch_size=batch_size(args), batches_per_epoch=batches)
    g = players(args)[0]
    with torch.no_grad():
        shape = g(torch.zeros(2, g.latent_dim)).shape[1:]
    images = torch.rand(8, batch_size(args), *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1

    class InMemoryBatches(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader([images[i % len(images)] for i in range(batches)], batch_size=None)

    return InMemoryBatches()


def plain(args) -> float:
    """The same algorithm as GAN.training_step, without a framework: seconds per timed step."""
    import torch

    from modules.ema import make_ema_copy
    from modules.losses import NonSaturatingLoss

    g, d, hp = players(args)
    ema, loss, n = make_ema_copy(g), NonSaturatingLoss(), batch_size(args)
    opt_g = torch.optim.Adam(g.parameters(), lr=hp["lr_g"], betas=hp["betas_g"])
    opt_d = torch.optim.Adam(d.parameters(), lr=hp["lr_d"], betas=hp["betas_d"])
    module = data(args)
    stamps = []
    for real in module.train_dataloader():
        plain_step(g, d, ema, loss, opt_g, opt_d, real, n, torch.Tensor.backward)
        stamps.append(clocks())
        if len(stamps) > args.warmup + args.steps:
            break
    return per_step(stamps, args.warmup, args.steps)


def plain_step(g, d, ema, loss, opt_g, opt_d, real, n: int, backward) -> None:
    """One D step on ``real`` and one G step against the frozen D, then the EMA: GAN.training_step's algorithm."""
    import torch

    from modules.ema import update_ema

    with torch.no_grad():
        fake = g(torch.randn(n, g.latent_dim), None)
    d_loss = loss.discriminator(d(real, None), d(fake, None))
    opt_d.zero_grad(set_to_none=True)
    backward(d_loss)
    opt_d.step()
    d.requires_grad_(False)
    g_loss = loss.generator(d(g(torch.randn(n, g.latent_dim), None), None))
    opt_g.zero_grad(set_to_none=True)
    backward(g_loss)
    opt_g.step()
    d.requires_grad_(True)
    update_ema(ema, g, 0.999)


def lightning(args) -> dict:
    """The plain step as a manual-optimization LightningModule (Lightning's loop, hooks, optimizer wrappers and
    manual_backward, nothing of ganforge's): Lightning's own share of ganforge's cost."""
    import pytorch_lightning as pl
    import torch

    from modules.ema import make_ema_copy
    from modules.losses import NonSaturatingLoss

    class PlainStep(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.g, self.d, self.hp = players(args)
            self.ema, self.gan_loss = make_ema_copy(self.g), NonSaturatingLoss()

        def configure_optimizers(self):
            hp = self.hp
            return [torch.optim.Adam(self.g.parameters(), lr=hp["lr_g"], betas=hp["betas_g"]),
                    torch.optim.Adam(self.d.parameters(), lr=hp["lr_d"], betas=hp["betas_d"])]

        def training_step(self, real, batch_idx):
            opt_g, opt_d = self.optimizers()
            plain_step(self.g, self.d, self.ema, self.gan_loss, opt_g, opt_d, real, real.shape[0],
                       self.manual_backward)

    stamps = batch_stamps(args)
    trainer = pl.Trainer(accelerator="cpu", max_steps=args.warmup + args.steps + 1, logger=False, callbacks=[stamps],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(PlainStep(), data(args))
    return per_step(stamps.times, args.warmup, len(stamps.times) - 1 - args.warmup)


def batch_stamps(args, on_warm=None):
    """A callback that stamps clocks() at each batch end (and calls ``on_warm`` after the warm-up batches)."""
    import pytorch_lightning as pl

    class BatchStamps(pl.Callback):
        def __init__(self):
            self.times = []

        def on_train_start(self, trainer, pl_module):
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(clocks())
            if len(self.times) == args.warmup + 1 and on_warm is not None:
                on_warm()

    return BatchStamps()


def clocks() -> tuple[float, float]:
    """(wall, this process's CPU) seconds: with 1 thread per process the CPU clock is the step's cost without the
    time spent waiting for a core that other programs hold, so it is steadier than the wall on a shared machine."""
    return time.perf_counter(), time.process_time()


def per_step(stamps: list[tuple[float, float]], first: int, steps: int) -> dict[str, float]:
    return {"seconds_per_step": (stamps[-1][0] - stamps[first][0]) / steps,
            "cpu_seconds_per_step": (stamps[-1][1] - stamps[first][1]) / steps}


def ganforge(args, variant: str) -> dict | None:
    """ganforge's GAN under a Lightning Trainer: seconds per timed step, and per step in torch.distributed
    collectives (waiting for the other rank included); None on ranks other than 0."""
    import pytorch_lightning as pl
    import torch.distributed as dist

    import pipeline.strategies  # noqa: F401  registers ddp_gan
    from modules.gan import GAN
    from modules.losses import NonSaturatingLoss
    from pipeline.strategies.deepspeed_gan import DeepSpeedGANStrategy
    from pipeline.strategies.overlapped_all_reduce import OverlappedAllReduce
    from pipeline.strategies.two_player_ddp import TwoPlayerDDPStrategy

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
    # Overlapped all-reduces return at once; their waits (and the buckets reduced late) are in finish().
    OverlappedAllReduce.finish = timing(OverlappedAllReduce.finish)

    g, d, hp = players(args)
    model = GAN(g, d, loss=NonSaturatingLoss(), compile=variant == "compiled", compile_mode=args.compile_mode, **hp)
    stamps = batch_stamps(args, on_warm=lambda: in_collectives.__setitem__(0, 0.0))
    _, devices, strategy = VARIANTS[variant]
    if strategy == INDEPENDENT:
        devices, strategy = 1, "auto"
    if isinstance(strategy, int):
        strategy = DeepSpeedGANStrategy(zero_stage=strategy)
    if strategy == "ddp_gan":
        strategy = TwoPlayerDDPStrategy(overlap=variant != "ddp2_no_overlap")
    trainer = pl.Trainer(accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0,
                         devices=devices, strategy=strategy,
                         max_steps=args.warmup + args.steps + 1, logger=False, callbacks=[stamps],
                         enable_checkpointing=False, enable_progress_bar=variant == "ganforge_bar",
                         enable_model_summary=False)
    trainer.fit(model, data(args))
    if not trainer.is_global_zero:
        return None
    steps = len(stamps.times) - 1 - args.warmup
    return {**per_step(stamps.times, args.warmup, steps), "collective_seconds_per_step": in_collectives[0] / steps,
            "first_batch_seconds": stamps.times[0][0] - stamps.started}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    runs = {"plain": plain, "lightning": lightning}
    result = runs[args.worker](args) if args.worker in runs else ganforge(args, args.worker)
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


def spread(values: list[float]) -> str:
    """min-max of the rounds as a percentage of their median."""
    return f"{100 * (max(values) - min(values)) / statistics.median(values):.0f}%"


def ratio_line(variant: str, reference: str, seconds: dict[str, list[float]], clock: str, floor: float | None) -> str:
    """reference/variant throughput (or, for 2-process variants, variant/reference step time) by ``clock``: the
    best rounds' ratio and the per-round ratios' median and range (the two ran back to back in each round)."""
    cost = reference.startswith(("solo", "ddp"))
    per_round = sorted((a / b) ** (-1 if cost else 1) for a, b in zip(seconds[reference], seconds[variant],
                                                                      strict=True))
    best = (min(seconds[reference]) / min(seconds[variant])) ** (-1 if cost else 1)
    kind = "step time" if cost else "throughput"
    return (f"{variant} / {reference} {kind} ({clock} clock): best rounds {best:.3f}, per round median "
            f"{statistics.median(per_round):.3f} (min {per_round[0]:.3f}, max {per_round[-1]:.3f})"
            + (f"  (floor {floor})" if floor else ""))


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    argv = sys.argv[1:]
    rounds: dict[str, list[dict]] = {variant: [] for variant in args.variants}
    for _ in range(args.rounds):
        for variant in args.variants:
            rounds[variant].append(run_variant(variant, argv))
    seconds = {v: [r["seconds_per_step"] for r in results] for v, results in rounds.items()}
    cpu_seconds = {v: [r["cpu_seconds_per_step"] for r in results] for v, results in rounds.items()}
    best = {v: min(results, key=lambda r: r["seconds_per_step"]) for v, results in rounds.items()}
    batch = batch_size(args)
    model = f"MLP G/D hidden={args.hidden} layers={args.layers}" if args.model == "mlp" else \
        f"{args.model} (configs/{MODELS[args.model][0]}.yaml's players)"
    print(f"{model}, batch {batch} per rank, {args.threads} thread(s) per process, {args.rounds} interleaved rounds "
          f"x {args.steps} steps, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<31}{'ms/step':>9}{'spread':>8}{'CPU ms':>8}{'spread':>8}{'steps/s':>9}"
          f"{'images/s':>10}{'vs 1 proc':>11}{'vs 2 indep':>12}{'collectives':>13}")
    one, two = (best[v]["seconds_per_step"] if v in best else float("nan") for v in ("ganforge", "solo2"))
    for variant in args.variants:
        label, ranks, strategy = VARIANTS[variant]
        s = best[variant]["seconds_per_step"]
        distributed = ranks > 1 and strategy != INDEPENDENT
        over_one = f"{s / one:.3f}" if ranks > 1 else ""
        over_two = f"{s / two:.3f}" if distributed else ""
        collectives = f"{1000 * best[variant]['collective_seconds_per_step']:.2f} ms" if distributed else ""
        cpu = cpu_seconds[variant]
        print(f"{label:<31}{1000 * s:>9.2f}{spread(seconds[variant]):>8}{1000 * min(cpu):>8.2f}{spread(cpu):>8}"
              f"{1 / s:>9.1f}{ranks * batch / s:>10.0f}"
              f"{over_one:>11}{over_two:>12}{collectives:>13}")
    floor = 0.97 if args.model == "mlp" else 0.98
    for clock, values in (("wall", seconds), ("CPU", cpu_seconds)):
        for variant, reference in (("lightning", "plain"), ("ganforge", "plain"), ("ganforge", "lightning"),
                                   ("ganforge_bar", "plain"), ("ddp2", "solo2"),
                                   ("ddp2", "ddp2_no_overlap")):
            if variant in values and reference in values:
                floors = floor if reference == "plain" and variant.startswith("ganforge") else None
                print(ratio_line(variant, reference, values, clock, floors))
    if "compiled" in best and "ganforge" in best:
        compile_s = [c["first_batch_seconds"] - e["first_batch_seconds"]
                     for c, e in zip(rounds["compiled"], rounds["ganforge"], strict=True)]
        speedups = [f"{clock} clock {statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})" for clock, r in (
            (clock, [a / b for a, b in zip(values["ganforge"], values["compiled"], strict=True)])
            for clock, values in (("wall", seconds), ("CPU", cpu_seconds)))]
        print(f"model.compile (mode {args.compile_mode or 'default'}): step speed-up per round, median (range): "
              f"{', '.join(speedups)}; compile time {statistics.median(compile_s):.0f} s (first batch over the eager "
              f"first batch, median; {min(compile_s):.0f}-{max(compile_s):.0f} s)")
    print("ms/step, CPU ms: the best round by the wall and the process's CPU clock; spread: the rounds' max - min "
          "over their median. 'vs 1 proc': step time over "
          "ganforge's 1-process one alone on the machine; 'vs 2 indep': over two independent 1-process runs sharing "
          "the machine as the 2 ranks do, the cost of distribution alone (ddp_gan ceiling 1.10); 'collectives': rank "
          "0's time per step in torch.distributed calls and overlapped all-reduce waits, waiting for the other rank "
          "included")


if __name__ == "__main__":
    main()
