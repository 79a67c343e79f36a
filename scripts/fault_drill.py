"""Fault drill: short real `ganforge fit` runs through each fault a cluster job meets, and a markdown table of
what happened: how and how fast the fault was detected, whether the run recovered (or stopped in one clean
line), the completed steps and samples lost, and whether last.ckpt is still loadable and finite.

Faults: kill -9 during training and during a checkpoint write (then resume); a lost DDP rank (kill -9 of one
of 2 gloo ranks, or a frozen one; then resume); a NaN storm (a resume with learning rates 1e30); a stalled and
a resetting HTTP shard server; a full disk (a small tmpfs, root only) under the checkpoints; a corrupt shard.

Floor: every fault ends in a recovery or a clean one-line stop within 60 s of the fault, with 0 completed
steps lost after resume and no corrupt or non-finite last.ckpt. The exit status is 1 when a row misses it.

Models are the ring8 MLPs (tiny, except the large one whose checkpoint takes long enough to write to be
killed in the middle) and a DCGAN at 16 px on shards of scikit-learn's digits.

Usage: python scripts/fault_drill.py [--work DIR] [--only NAME ...]   (a few minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
FLOOR_S = 60.0
DEADLINE_S = 150.0  # a run still going after this is killed and reported as hung


# ---- runs -------------------------------------------------------------------------------------------
class Run:
    """``ganforge fit --config CONFIG ARGS`` in its own process group, its stderr/stdout lines time-stamped."""

    def __init__(self, config: Path, *args: str):
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PL_DISABLE_FORK="1",
                   PYTHONWARNINGS="default")
        self.started = time.monotonic()
        self.log_dir = config.parent
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.commands.cli", "fit", "--config", str(config),
                                      *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = DEADLINE_S) -> int | None:
        """The exit status, or None when it had to be killed (hung)."""
        try:
            code = self.proc.wait(timeout=max(0.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.proc.wait()
            code = None
        self._reader.join(timeout=5)
        with (self.log_dir / "output.log").open("a") as log:  # every run's output, for a closer look
            log.write("\n".join(line for _, line in self.lines) + "\n")
        return code

    def kill_group(self) -> None:
        with _suppress_lookup():
            os.killpg(self.proc.pid, signal.SIGKILL)

    def first(self, pattern: str) -> tuple[float, str] | None:
        regex = re.compile(pattern)
        return next(((t, line) for t, line in self.lines if regex.search(line)), None)

    def error_line(self) -> str:
        """The last line that reads like an error (what the user is left with)."""
        for _, line in reversed(self.lines):
            if re.search(r"error|Error|diverged", line):
                return line.strip()
        return self.lines[-1][1].strip() if self.lines else ""


@contextmanager
def _suppress_lookup():
    try:
        yield
    except ProcessLookupError:
        pass


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Lightning's launcher starts rank 1 as a child)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def metrics_files(run_dir: Path) -> set[Path]:
    return set(run_dir.glob("logs/**/metrics.csv"))


def logged_steps(run_dir: Path, besides: set[Path] = frozenset()) -> int:
    """The highest generator step in the run's metrics.csv files (flushed every step) other than ``besides``
    (an earlier run's), -1 if none."""
    best = -1
    for path in metrics_files(run_dir) - besides:
        try:
            with path.open(newline="") as f:
                best = max([best, *(int(row["step"]) for row in csv.DictReader(f) if row.get("step"))])
        except (OSError, ValueError, KeyError):
            continue
    return best


def last_metric(run_dir: Path, name: str) -> float | None:
    value = None
    for path in sorted(run_dir.glob("logs/**/metrics.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get(name):
                    value = float(row[name])
    return value


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(poll)
    return False


def checkpoint_state(path: Path) -> tuple[bool, int | None, str]:
    """(loadable and finite, its generator step, a short verdict)."""
    if not path.exists():
        return False, None, "missing"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to load is the verdict
        return False, None, f"unloadable ({type(err).__name__})"
    tensors = [t for t in checkpoint["state_dict"].values() if torch.is_floating_point(t)]
    finite = all(torch.isfinite(t).all() for t in tensors)
    largest = max(t.abs().max().item() for t in tensors)
    step = checkpoint["global_step"]
    return finite, step, f"yes (step {step}, max abs weight {largest:.3g})" if finite else f"NON-FINITE (step {step})"


# ---- configs ----------------------------------------------------------------------------------------
def trainer_config(run_dir: Path, max_steps: int, ckpt_dir: Path, every: int) -> dict:
    """A CPU trainer logging every step to CSV (flushed at once: the drill reads what a killed run wrote)."""
    return {"max_steps": max_steps, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1,
            "default_root_dir": str(run_dir), "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run_dir), "name": "logs", "flush_logs_every_n_steps": 1}},
            "callbacks": [checkpointing(ckpt_dir, every)]}


def ring8_config(run_dir: Path, max_steps: int, every: int, hidden: int = 32, layers: int = 2,
                 batch_size: int = 64, extra_trainer: dict | None = None, ckpt_dir: Path | None = None) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {**trainer_config(run_dir, max_steps, ckpt_dir or run_dir / "checkpoints", every),
                    **(extra_trainer or {})},
        "model": {"class_path": "modules.gan.GAN", "init_args": {
            "generator": {"class_path": "modules.nets.mlp.MLPGenerator",
                          "init_args": {"latent_dim": 2, "hidden": hidden, "layers": layers}},
            "discriminator": {"class_path": "modules.nets.mlp.MLPDiscriminator",
                              "init_args": {"hidden": hidden, "layers": layers}},
            "lr_g": 1e-3, "lr_d": 1e-3, "noise_seed": 1, "ema_kimg": 1.0}},
        "data": {"class_path": "datamodules.mixture_datamodule.MixtureDataModule",
                 "init_args": {"name": "ring8", "batch_size": batch_size, "batches_per_epoch": 100, "seed": 2}},
    }
    return write_config(run_dir, config)


def dcgan_config(run_dir: Path, index: str, max_steps: int, every: int, **data: object) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": trainer_config(run_dir, max_steps, run_dir / "checkpoints", every),
        "model": {"class_path": "modules.gan.GAN", "init_args": {
            "generator": {"class_path": "modules.nets.dcgan.DCGANGenerator",
                          "init_args": {"latent_dim": 16, "resolution": 16, "channels": 1, "base_width": 8}},
            "discriminator": {"class_path": "modules.nets.dcgan.DCGANDiscriminator",
                              "init_args": {"resolution": 16, "channels": 1, "base_width": 8}},
            "noise_seed": 1, "ema_kimg": 1.0}},
        "data": {"class_path": "datamodules.webdataset_datamodule.WebDataModule",
                 "init_args": {"index": index, "resolution": 16, "channels": 1, "batch_size": 32, "num_workers": 1,
                               "shuffle_buffer": 64, "pin_memory": False, "seed": 3, "read_timeout": 2.0,
                               "read_retries": 3, **data}},
    }
    return write_config(run_dir, config)


def checkpointing(dirpath: Path, every: int, top_k: int = -1) -> dict:
    return {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(dirpath), "every_n_train_steps": every, "save_last": True,
                          "save_top_k": top_k}}


def write_config(run_dir: Path, config: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "drill.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---- a shard server that breaks on purpose ----------------------------------------------------------
@dataclass
class ShardServer:
    """Static files over HTTP with range requests; the first ``times`` GETs of ``target`` stall (send
    ``after`` bytes of the body, then nothing) or reset (``after`` bytes, then an RST)."""

    root: Path
    mode: str | None = None  # "stall" | "reset" | None
    target: str = ""
    after: int = 20_000
    times: int = 1
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, path, what)
    stop: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def serve(self):
        drill = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._respond(body=False)

            def do_GET(self) -> None:
                self._respond(body=True)

            def _respond(self, body: bool) -> None:
                path = drill.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if match:
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                drill.events.append((time.monotonic(), self.path, f"GET from byte {start}"))
                faulty = drill.mode and self.path.endswith(drill.target) and drill.times > 0
                if not faulty:
                    self.wfile.write(data[start:])
                    return
                drill.times -= 1
                self.wfile.write(data[start:start + drill.after])
                self.wfile.flush()
                drill.events.append((time.monotonic(), self.path, drill.mode))
                if drill.mode == "stall":
                    drill.stop.wait(30)
                else:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            self.stop.set()
            server.shutdown()
            server.server_close()

    def fault_and_retry(self) -> tuple[float, float] | None:
        """(when the fault began, when the reader asked again for the rest of that shard)."""
        fault = next((t for t, path, what in self.events if what in ("stall", "reset")), None)
        retry = next((t for t, path, what in self.events if fault is not None and t > fault
                      and path.endswith(self.target) and what.startswith("GET")), None)
        return (fault, retry) if retry is not None else None


# ---- the table --------------------------------------------------------------------------------------
@dataclass
class Row:
    fault: str
    detected: str
    seconds: float | None
    outcome: str
    steps_lost: str
    samples_lost: str
    checkpoint: str
    ok: bool

    def cells(self) -> list[str]:
        seconds = "-" if self.seconds is None else f"{self.seconds:.1f}"
        return [self.fault, self.detected, seconds, self.outcome, self.steps_lost, self.samples_lost,
                self.checkpoint, "yes" if self.ok else "**NO**"]


HEADER = ["fault", "detected (how)", "s from fault to clean stop / to training again", "recovered or stopped cleanly",
          "steps lost", "samples lost", "last.ckpt loadable, finite", "meets floor"]


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def one_line(line: str, limit: int = 150) -> str:
    line = line.replace("ganforge: error: ", "").replace("ganforge fit: error: ", "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


# ---- the faults -------------------------------------------------------------------------------------
def resume_and_finish(config: Path, ckpt: Path, max_steps: int, killed_at: float, *args: str) -> tuple[Run, int, float]:
    """Resumes from ``ckpt``; (the run, its exit status, seconds from the fault until it trained again)."""
    run_dir = Path(yaml.safe_load(config.read_text())["trainer"]["default_root_dir"])
    earlier = metrics_files(run_dir)
    start_step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    resumed = Run(config, "--ckpt_path", str(ckpt), *args)
    wait_until(lambda: logged_steps(run_dir, earlier) > start_step or resumed.proc.poll() is not None, DEADLINE_S)
    back = time.monotonic() - killed_at
    return resumed, resumed.wait(), back


def kill_during_training(work: Path) -> Row:
    run_dir, max_steps = work / "kill_training", 120
    config = ring8_config(run_dir, max_steps, every=20)
    run = Run(config)
    wait_until(lambda: logged_steps(run_dir) >= 50 or run.proc.poll() is not None, DEADLINE_S)
    done = logged_steps(run_dir)
    run.kill_group()
    killed_at = time.monotonic()
    run.wait()
    last = run_dir / "checkpoints" / "last.ckpt"
    ok_before, saved_step, _ = checkpoint_state(last)
    resumed, code, back = resume_and_finish(config, last, max_steps, killed_at)
    finite, step, verdict = checkpoint_state(last)
    reference = reference_state(work, lambda d: ring8_config(d, max_steps, every=20))
    same = reference is not None and equal_states(last, reference)
    ok = ok_before and code == 0 and step == max_steps and finite and back < FLOOR_S and same
    return Row("kill -9 during training", f"process gone at step ~{done}; last.ckpt at step {saved_step}", back,
               f"resumed from step {saved_step}, finished at {step}/{max_steps}; final weights "
               f"{'bit-identical to' if same else 'DIFFER from'} an uninterrupted run",
               f"0 ({done - saved_step} redone)", "0", verdict, ok)


def reference_state(work: Path, make: Callable[[Path], Path]) -> Path | None:
    run_dir = work / "reference"
    if not (run_dir / "checkpoints" / "last.ckpt").exists():
        Run(make(run_dir)).wait()
    path = run_dir / "checkpoints" / "last.ckpt"
    return path if path.exists() else None


def equal_states(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def kill_during_checkpoint_write(work: Path) -> Row:
    run_dir, max_steps = work / "kill_write", 30
    ckpt_dir = run_dir / "checkpoints"
    config = ring8_config(run_dir, max_steps, every=5, hidden=1024, layers=4, batch_size=32)
    run = Run(config)
    wait_until(lambda: (ckpt_dir / "last.ckpt").exists() or run.proc.poll() is not None, DEADLINE_S)
    previous_step = checkpoint_state(ckpt_dir / "last.ckpt")[1]

    def writing() -> bool:
        return any(p.name.endswith(".partial") for p in ckpt_dir.iterdir()) or run.proc.poll() is not None

    caught = wait_until(writing, DEADLINE_S, poll=0.001)
    partial = [p.name for p in ckpt_dir.iterdir() if p.name.endswith(".partial")]
    run.kill_group()
    killed_at = time.monotonic()
    run.wait()
    last = ckpt_dir / "last.ckpt"
    ok_after_kill, step_after_kill, verdict_after_kill = checkpoint_state(last)
    left = sorted(p.name for p in ckpt_dir.iterdir() if p.name.startswith("."))
    resumed, code, back = resume_and_finish(config, last, max_steps, killed_at)
    finite, step, _ = checkpoint_state(last)
    ok = bool(caught and partial) and ok_after_kill and code == 0 and step == max_steps and finite and back < FLOOR_S
    return Row("kill -9 during a checkpoint write",
               f"killed while {', '.join(partial) or 'NO partial file'} was being written; last.ckpt intact at "
               f"step {step_after_kill} (the write before was at {previous_step})", back,
               f"resumed from step {step_after_kill}, finished at {step}/{max_steps}; left by the kill: "
               f"{', '.join(left) or 'nothing'} (a name no resume picks)", "0", "0",
               f"{verdict_after_kill} after the kill", ok)


def lost_ddp_rank(work: Path, frozen: bool = False) -> Row:
    """kill -9 of rank 1 (its sockets close: rank 0 fails at its next collective), or SIGSTOP (nothing closes:
    rank 0 waits for the process group's timeout, set to 20 s here; PyTorch's default is 30 minutes)."""
    run_dir, max_steps = work / ("frozen_rank" if frozen else "lost_rank"), 120
    args = ["--trainer.devices", "2"]
    args += (["--trainer.strategy", "pipeline.strategies.two_player_ddp.TwoPlayerDDPStrategy",
              "--trainer.strategy.timeout", "0:00:20"] if frozen else ["--trainer.strategy", "ddp_gan"])
    config = ring8_config(run_dir, max_steps, every=20)
    run = Run(config, *args)
    wait_until(lambda: logged_steps(run_dir) >= 50 or run.proc.poll() is not None, DEADLINE_S)
    ranks = children(run.proc.pid)
    done = logged_steps(run_dir)
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP if frozen else signal.SIGKILL)
    killed_at = time.monotonic()
    code = run.wait(timeout=(killed_at - run.started) + FLOOR_S)
    stopped_after = time.monotonic() - killed_at
    for pid in ranks:  # a stopped rank that outlived its launcher
        with _suppress_lookup():
            os.kill(pid, signal.SIGKILL)
    message = run.error_line()
    clean = code not in (0, None) and message.startswith(("ganforge: error:", "ganforge fit: error:"))
    last = run_dir / "checkpoints" / "last.ckpt"
    _, saved_step, _ = checkpoint_state(last)
    resumed, resumed_code, back = resume_and_finish(config, last, max_steps, killed_at, *args)
    finite, step, verdict = checkpoint_state(last)
    ok = bool(ranks) and clean and stopped_after < FLOOR_S and resumed_code == 0 and step == max_steps and finite
    what = "SIGSTOP of rank 1 of 2 (frozen), trainer.strategy.timeout 20 s" if frozen else "kill -9 of rank 1 of 2"
    detected = ("HUNG: rank 0 still waiting after 60 s" if code is None else
                f"rank 0 stopped {stopped_after:.1f} s later (exit {code}): {one_line(message, 110)}")
    return Row(f"lost DDP rank ({what}, gloo)", detected, stopped_after,
               f"stopped cleanly; resumed 2 ranks from step {saved_step} (training again {back:.0f} s after the "
               f"fault), finished at {step}/{max_steps}",
               f"0 ({done - saved_step} redone)", "0", verdict, ok)


def nan_storm(work: Path) -> Row:
    run_dir = work / "nan_storm"
    config = ring8_config(run_dir, 40, every=10)
    Run(config).wait()
    last = run_dir / "checkpoints" / "last.ckpt"
    good = checkpoint_state(last)
    run = Run(config, "--ckpt_path", str(last), "--trainer.max_steps", "400", "--model.init_args.lr_d", "1e30",
              "--model.init_args.lr_g", "1e30")
    code = run.wait()
    started = run.first(r"skipped the (generator|discriminator)'s step")
    stopped_after = (run.lines[-1][0] - started[0]) if started and run.lines else None
    message = run.error_line()
    finite, step, verdict = checkpoint_state(last)
    clean = code not in (0, None) and message.startswith("ganforge fit: error: training diverged")
    skipped = [last_metric(run_dir, f"health/skipped_steps_{p}") for p in ("d", "g")]
    ok = clean and finite and stopped_after is not None and stopped_after < FLOOR_S
    return Row("NaN storm (resumed at step 40 with lr 1e30)",
               f"first skipped step warned; skipped steps d/g = {skipped[0]:.0f}/{skipped[1]:.0f}" if all(
                   s is not None for s in skipped) else "first skipped step warned", stopped_after,
               f"stopped cleanly (exit {code}): {one_line(message)}", "- (stopped)", "0", verdict, ok and good[0])


def make_shards(work: Path) -> Path:
    shards = work / "shards"
    if not (shards / "shards.json").exists():
        subprocess.run([sys.executable, "-m", "pipeline.commands.cli", "shards", "--source", "sklearn-digits",
                        "--resolution", "16", "--max-count", "200", "--out", str(shards)], cwd=REPO, check=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"), capture_output=True)
    return shards


def http_fault(work: Path, mode: str) -> Row:
    shards = make_shards(work)
    target = sorted(p.name for p in shards.glob("*.tar"))[2]
    server = ShardServer(shards, mode=mode, target=target)
    run_dir, max_steps = work / f"http_{mode}", 70  # one pass over the shards takes 56 batches
    with server.serve() as url:
        config = dcgan_config(run_dir, f"{url}/shards.json", max_steps, every=35)
        run = Run(config)
        code = run.wait()
    times = server.fault_and_retry()
    finite, step, verdict = checkpoint_state(run_dir / "checkpoints" / "last.ckpt")
    retries, skipped = last_metric(run_dir, "data/read_retries"), last_metric(run_dir, "data/skipped_samples")
    detected = (f"{mode} of {target} at byte {server.after}: ranged re-GET {times[1] - times[0]:.1f} s later"
                if times else f"{mode} NOT retried")
    ok = code == 0 and times is not None and times[1] - times[0] < FLOOR_S and step == max_steps and finite \
        and skipped == 0
    return Row(f"{'stalled' if mode == 'stall' else 'resetting'} HTTP shard server", detected,
               None if times is None else times[1] - times[0],
               f"recovered: read resumed from byte {server.after} ({retries:.0f} retry), finished at {step}/{max_steps}"
               if retries is not None else f"exit {code}: {one_line(run.error_line())}",
               "0", f"{skipped:.0f}" if skipped is not None else "?", verdict, ok)


def corrupt_shard(work: Path) -> Row:
    source = make_shards(work)
    shards = work / "corrupt_shards"
    if shards.exists():
        shutil.rmtree(shards)
    shutil.copytree(source, shards)
    target = sorted(shards.glob("*.tar"))[3]
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = os.urandom(4096)  # garbage over a tar header region, mid-shard
    target.write_bytes(bytes(data))
    run_dir, max_steps = work / "corrupt", 70
    config = dcgan_config(run_dir, str(shards / "shards.json"), max_steps, every=35, max_bad_fraction=0.2)
    run = Run(config)
    code = run.wait()
    warned = run.first(r"data: skipped the rest of shard")
    finite, step, verdict = checkpoint_state(run_dir / "checkpoints" / "last.ckpt")
    skipped = last_metric(run_dir, "data/skipped_samples")
    lost = re.search(r"\((\d+) samples lost\)", warned[1]) if warned else None
    ok = code == 0 and warned is not None and step == max_steps and finite
    return Row("corrupt shard (4 KiB of garbage mid-shard)",
               f"tar read error: {one_line(warned[1].split('data: ')[-1], 110)}" if warned else "NOT detected",
               None if not warned else 0.0,
               f"recovered: rest of the shard skipped and counted, finished at {step}/{max_steps}"
               if code == 0 else f"exit {code}: {one_line(run.error_line())}",
               "0", f"{lost.group(1) if lost else '?'} (data/skipped_samples {skipped})", verdict, ok)


@contextmanager
def tmpfs(folder: Path, size_kib: int):
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def full_disk(work: Path) -> Row:
    run_dir, max_steps = work / "full_disk", 100
    probe = run_dir / "probe"
    ring8_config(probe, 1, every=1, hidden=128, layers=4)
    Run(probe / "drill.yaml").wait()
    size = (probe / "checkpoints" / "last.ckpt").stat().st_size
    try:
        with tmpfs(run_dir / "disk", size_kib=int(3.5 * size / 1024)) as disk:
            config = ring8_config(run_dir, max_steps, every=10, hidden=128, layers=4, ckpt_dir=disk)
            run = Run(config)
            code = run.wait()
            message = run.error_line()
            full = run.first(r"no space|not written|space")
            finite, step, verdict = checkpoint_state(disk / "last.ckpt")
            left = sorted(p.name for p in disk.iterdir())
            steps = [checkpoint_state(p)[1] for p in disk.glob("*.ckpt")]  # the complete ones load
            newest = max((s for s in steps if s is not None), default=None)
    except (subprocess.CalledProcessError, OSError) as err:
        return Row("full disk under the checkpoints", f"not run: {err}", None, "-", "-", "-", "-", False)
    clean = code not in (0, None) and message.startswith(("ganforge: error:", "ganforge fit: error:"))
    ok = clean and finite and full is not None and run.lines[-1][0] - full[0] < FLOOR_S
    return Row(f"full disk ({int(3.5 * size / 1024)} KiB tmpfs, checkpoints {size // 1024} KiB)",
               "free space checked before the write", 0.0 if full else None,
               f"stopped cleanly (exit {code}): {one_line(message)}; files: {', '.join(left)}",
               f"{max(logged_steps(run_dir), newest or 0) - (newest or 0)} from the newest complete checkpoint "
               f"(step {newest}; last.ckpt at {step})", "0", verdict, ok)


FAULTS = {"kill_training": kill_during_training, "kill_write": kill_during_checkpoint_write,
          "lost_rank": lost_ddp_rank, "frozen_rank": lambda w: lost_ddp_rank(w, frozen=True),
          "nan_storm": nan_storm, "http_stall": lambda w: http_fault(w, "stall"),
          "http_reset": lambda w: http_fault(w, "reset"), "full_disk": full_disk, "corrupt_shard": corrupt_shard}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--only", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fault-drill-"))
    rows = []
    for name in args.only:
        began = time.monotonic()
        try:
            row = FAULTS[name](work)
        except Exception as err:  # noqa: BLE001 - a drill that breaks is a row that fails, not a lost table
            row = Row(name, f"drill error: {type(err).__name__}: {err}", None, "-", "-", "-", "-", False)
        print(f"{name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        rows.append(row)
    print(table(rows))
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
