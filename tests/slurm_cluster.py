"""A throwaway two-node SLURM cluster on this machine, for tests that need a real scheduler.

munged, slurmctld and two slurmd daemons (nodes n1 and n2, both 127.0.0.1 on their own ports) run as root
from a private directory with free ports, a private munge socket and a random first job id, so clusters of
concurrent test sessions on one machine do not meet. ``cred_expire`` is cut from 120 s to 10 s: Slurm holds
a requeued job that long before it may start again.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")
INSTALL_TIMEOUT_S = 240


def install_slurm() -> str | None:
    """Installs Debian's slurm-wlm and munge if missing; returns why not, or None when they are there."""
    if all(shutil.which(name) for name in DAEMONS):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "slurm-wlm/munge are not installed and cannot be (needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    start = time.monotonic()
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} took longer than {INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            return f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}"
    print(f"installed slurm-wlm and munge in {time.monotonic() - start:.0f} s")
    missing = [name for name in DAEMONS if not shutil.which(name)]
    return f"installed, but {missing} are still missing" if missing else None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SlurmCluster:
    """Start with ``start()``, submit with the environment ``env``, and always ``stop()``."""

    nodes = ("n1", "n2")

    def __init__(self, cpus_per_node: int = 1):
        # Short path: the munge socket must fit in a sockaddr_un (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="gf-slurm-", dir="/tmp"))
        self.cpus_per_node = cpus_per_node
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._procs: list[tuple[str, subprocess.Popen]] = []

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        try:
            self._write_files()
            self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                                   f"--key-file={self.root / 'munge' / 'munge.key'}",
                                   f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                                   f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                                   f"--log-file={self.root / 'munge' / 'munged.log'}"])
            self._wait(lambda: self.munge_socket.exists(), timeout, "munged socket")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), timeout, "slurmctld")
            for node in self.nodes:
                self._spawn(f"slurmd {node}", ["slurmd", "-D", "-N", node, "-f", str(self.conf)])
            self._wait(self._nodes_idle, timeout, "both nodes idle")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancels the cluster's jobs, ends every daemon it started (by process id), removes its directory."""
        if self._procs:
            self.run(["scancel", "--full", "--user", "root"], check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run(["squeue", "-h"], check=False).stdout.strip():
                time.sleep(0.5)
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        self._kill_job_processes()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- jobs ---------------------------------------------------------------------------------
    def run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty once the controller has forgotten the job)."""
        done = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        fields: dict[str, str] = {}
        for item in done.stdout.split():
            key, _, value = item.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_for(self, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
        """Polls until the job is in one of ``states``; raises with the daemons' logs on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout} s: {self.job(job_id)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("log/*.log")))

    # ---- internals ----------------------------------------------------------------------------
    def _write_files(self) -> None:
        munge_dir = self.root / "munge"
        munge_dir.mkdir(mode=0o755)
        munge_dir.chmod(0o755)  # munged refuses a socket directory that is not 0755
        key = munge_dir / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        for sub in ("log", "state", "spool"):
            (self.root / sub).mkdir()
        self.root.chmod(0o755)
        ctld_port, *node_ports = free_ports(1 + len(self.nodes))
        nodes = "\n".join(
            f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs={self.cpus_per_node} "
            f"RealMemory=1000 State=UNKNOWN" for name, port in zip(self.nodes, node_ports, strict=True))
        self.conf.write_text(f"""\
ClusterName=ganforge-test
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
FirstJobId={secrets.randbelow(900_000) + 1000}
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}/%n
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root}/slurmd-%n.pid
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log'}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
KillWait=5
MinJobAge=600
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name.replace(' ', '-')}.out", "w")  # noqa: SIM115  the daemon owns it
        self._procs.append((name, subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                   start_new_session=True)))

    def _ok(self, cmd: list[str], needle: str) -> bool:
        done = self.run(cmd, check=False)
        return done.returncode == 0 and needle in done.stdout

    def _nodes_idle(self) -> bool:
        done = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False)
        states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
        return all(states.get(node) == "idle" for node in self.nodes)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n"
                                       f"{self._outputs()}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"no {what} after {timeout} s\n{self._outputs()}\n{self.logs()}")

    def _kill_job_processes(self) -> None:
        """Job steps outlive the daemons (slurmstepd detaches): end every process that carries this cluster's
        SLURM_CONF, i.e. was started by it or under it."""
        marker = f"SLURM_CONF={self.conf}".encode() + b"\0"
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "environ").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue  # gone, or not ours to read

    def _outputs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.root.glob("log/*")))
