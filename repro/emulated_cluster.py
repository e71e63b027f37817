"""The emulated cluster: two nodes on one machine, as two network namespaces joined by a rate-limited veth pair,
and the runner of an experiment's ``emulated-cluster`` scale.

Node i lives in namespace NS_i with the address 10.77.0.(i+1) on its end of the veth pair; both ends carry a token
bucket (`tc qdisc ... tbf`), so traffic between the nodes runs at the set rate while traffic inside one node (its
own workers, over the namespace's loopback) does not. The namespaces are private to this machine and to the
process that made them: nothing else is reachable from inside, and the addresses exist only there.

``run_cells`` runs each `repro run` command as one job of two nodes (``--run-opt nodes=2``, node 0 in the first
namespace, node 1 in the second), one job at a time, in the order given (`repro reproduce` interleaves the arms seed
by seed). The link's rate is ``LINK_RATE``, fixed here before any run; each finished run folder gets
``emulated_cluster.json`` (the rate, the nodes, the load average when it started). Wall-clock numbers mean something
only on a quiet machine.

Used by `repro reproduce --scale emulated-cluster`, tests/test_netns.py and benchmarks/multinode.py. Needs root and
iproute2 (`ip`, `tc`).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

SUBNET = "10.77.0"
PREFIX = "repro-ns"  # namespaces are named PREFIX-<pid of the maker>-<pair><node letter>
_pairs = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {r.stderr.strip() or r.returncode}")
    return r


class NetnsError(RuntimeError):
    pass


def unavailable() -> str | None:
    """Why two namespaces cannot be made here (None when they can): not root, or no iproute2."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"needs iproute2 ({', '.join(missing)} not found; apt-get install iproute2)"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"`ip netns` fails here: {r.stderr.strip() or r.returncode}"
    return None


def remove_stale() -> None:
    """Delete namespaces this module made in a process that no longer exists (a run killed with SIGKILL)."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ")[0]
        parts = name.split("-")
        if not name.startswith(PREFIX + "-") or len(parts) != 4 or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            _kill_inside(name)
            _ip("netns", "del", name, check=False)
        except PermissionError:
            pass


def _kill_inside(namespace: str) -> None:
    """SIGKILL what still runs inside one of our namespaces (only processes started there by this module's user)."""
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + 5
    while _ip("netns", "pids", namespace, check=False).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.05)


class NodePair:
    """Two namespaces joined by a veth pair at ``rate`` (tc tbf syntax, e.g. "100mbit"); a context manager that
    removes both namespaces (and with them the veth pair) on exit, killing anything still running inside."""

    def __init__(self, rate: str = "100mbit", burst: str = "32kbit", latency: str = "50ms"):
        self.rate, self.burst, self.latency = rate, burst, latency
        pair = next(_pairs) % 100
        self.namespaces = [f"{PREFIX}-{os.getpid()}-{pair}{node}" for node in "ab"]
        short = os.getpid() % 10**8  # interface names have at most 15 characters
        self.interfaces = [f"rv{short}x{pair}{node}" for node in "ab"]
        self.addresses = [f"{SUBNET}.1", f"{SUBNET}.2"]
        self._made: list[str] = []

    def __enter__(self) -> "NodePair":
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> None:
        remove_stale()
        for ns in self.namespaces:
            _ip("netns", "add", ns)
            self._made.append(ns)
        a, b = self.interfaces
        _ip("link", "add", a, "netns", self.namespaces[0], "type", "veth", "peer", "name", b,
            "netns", self.namespaces[1])
        for ns, dev, addr in zip(self.namespaces, self.interfaces, self.addresses):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            if self.rate:
                r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                                    "rate", self.rate, "burst", self.burst, "latency", self.latency],
                                   capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    raise NetnsError(f"tc tbf on {dev} failed: {r.stderr.strip() or r.returncode}")

    def command(self, node: int, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """``argv`` run inside node ``node``'s namespace, with gloo (and TensorPipe) bound to its veth end: gloo
        otherwise picks the interface the hostname resolves to, often loopback, which the other node cannot reach."""
        dev = self.interfaces[node]
        extra = {"GLOO_SOCKET_IFNAME": dev, "TP_SOCKET_IFNAME": dev, **(env or {})}
        return ["ip", "netns", "exec", self.namespaces[node], "env", *(f"{k}={v}" for k, v in extra.items()),
                *argv]

    def close(self) -> None:
        for ns in reversed(self._made):
            _kill_inside(ns)
            _ip("netns", "del", ns, check=False)
        self._made.clear()


def clean_environment() -> dict[str, str]:
    """This process's environment minus any outer Slurm/torchrun job (repro would join it instead of launching)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "TORCHELASTIC_"))
            and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                          "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME")}


# -- an experiment's emulated-cluster scale ---------------------------------------------------------------------------

LINK_RATE = "100mbit"  # the link between the two nodes (tc tbf), fixed before any run of the scale
NODES = 2
FIRST_PORT = 29500  # rendezvous ports inside the private namespaces (one per job, so no TIME_WAIT socket is in the way)


def run_cells(argvs: list[list[str]], validate: Callable[[list[str]], object], echo: Callable[[str], None],
              dry_run: bool = False, rate: str = LINK_RATE) -> int:
    """Each `repro run` argv (with its --out) as one job on the two emulated nodes, one job at a time; returns the
    number of failed jobs. Node 0 writes the run folder; node 1 runs the same command with its node rank."""
    for argv in argvs:
        validate(argv)
    if dry_run:
        for argv in argvs:
            echo(f"repro run {' '.join(argv)}  # on 2 emulated nodes, link {rate}")
        return 0
    reason = unavailable()
    if reason:
        from repro.errors import UsageError

        raise UsageError(f"the emulated cluster {reason}")
    load = os.getloadavg()[0]
    if load > 0.5:
        echo(f"warning: load average {load:.1f} before the first job: wall-clock numbers need a quiet machine")
    failed = 0
    env = {**clean_environment(), "OMP_NUM_THREADS": "1"}
    with NodePair(rate=rate) as pair, tempfile.TemporaryDirectory(prefix="repro-cluster-") as tmp:
        for i, argv in enumerate(argvs):
            port = FIRST_PORT + 10 * (i % 200)
            report = Path(tmp) / f"job{i}.json"
            started_load = os.getloadavg()[0]
            procs = []
            for rank in range(NODES):
                run_opts = {"nodes": NODES, "node_rank": rank, "master_addr": pair.addresses[0], "master_port": port,
                            **({"report": report} if rank == 0 else {})}
                cmd = [sys.executable, "-m", "repro", "run", *argv,
                       *(f for key, value in run_opts.items() for f in ("--run-opt", f"{key}={value}"))]
                procs.append(subprocess.Popen(pair.command(rank, cmd), env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True))
            errors = [p.communicate()[1] for p in procs]
            codes = [p.returncode for p in procs]
            run_dir = _run_dir(report)
            if any(codes) or run_dir is None:
                failed += 1
                worst = next((e for c, e in zip(codes, errors) if c), errors[0])
                echo(f"failed (exit {codes}): repro run {' '.join(argv)}\n{worst.strip()[-2000:]}")
                continue
            (run_dir / "emulated_cluster.json").write_text(json.dumps(
                {"nodes": NODES, "link_rate": rate, "load_average_at_start": round(started_load, 2),
                 "namespaces": "network namespaces joined by a veth pair, tc tbf on both ends"}, indent=1) + "\n")
            echo(f"done {i + 1}/{len(argvs)}: {run_dir}")
    return failed


def _run_dir(report: Path) -> Path | None:
    try:
        found = json.loads(report.read_text()).get("run_dir")
    except (OSError, ValueError):
        return None
    return Path(found) if found and Path(found).is_dir() else None
