"""D-PSGD on a ring against every-step all-reduce on an emulated 4-node cluster (one worker per node), in one run.

    sudo python benchmarks/gossip_cluster.py --steps 30 --rate 100mbit --repeats 3

Four network namespaces on this machine stand in for four nodes, each joined to a fifth (the switch: a Linux bridge)
by a veth pair whose two ends a token bucket (`tc ... tbf`, latency 50 ms of queue) holds to --rate: every node's
link runs at --rate each way, as a 100 Mbit/s NIC on a switch. (This kernel has no netem, so no propagation delay is
added: the latency is the queue's.) One `repro run` per node (--machines 1, --nodes 4), gloo on CPU, for
each task (the quick LM, lstm-ptb; ResNet-20 on the CIFAR-10 JPEG copy) and each policy: every-step gradient
all-reduce (`--algo minibatch-sgd`, DDP's bucketed ring all-reduce) and D-PSGD (`--algo dpsgd`: gossip with the two
ring neighbours, Lian's order, the exchange overlapping the gradient), the same --steps per worker. Prints, per
(task, policy), training seconds per step (`wall_seconds` / steps of the last metrics row: the slowest rank), the
whole process's seconds, and bytes sent per step per worker (`bytes_sent` / steps: the mean over ranks), then the
every-step / ring ratio per task; writes the table to --csv. Configurations alternate within each repeat so a
drift of the machine hits all of them; medians over repeats. Time it on a quiet machine only. Needs root and
iproute2; the namespaces (and anything left in them) are removed on exit, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from repro import emulated_cluster as cluster

import multinode  # benchmarks/ is sys.path[0] when a benchmark runs

REPO = Path(__file__).resolve().parents[1]
SUBNET = "10.78.0"  # private to the namespaces (NodePair's 10.77.0 may exist beside it)
TASKS = {  # name -> the `repro run` task arguments (quick recipes; evaluation cut to one batch: it is not timed)
    "lm": ["lstm-ptb", "--preset", "quick"],
    "resnet20": ["resnet20-cifar10", "--preset", "quick", "--set", "data_format=jpeg"],
}
POLICIES = {"every-step": ["--algo", "minibatch-sgd"], "dpsgd-ring": ["--algo", "dpsgd"]}
DATA_FLAGS = {"lm": "REPRO_PTB_DIR", "resnet20": "REPRO_CIFAR10_DIR"}


class NodeStar(cluster.NodePair):
    """``nodes`` namespaces, each with one veth pair to a switch namespace (a bridge); tc tbf at ``rate`` on both
    ends of every pair. Like NodePair (a context manager that removes every namespace it made, killing anything
    still inside; ``command`` binds gloo to a node's link); node i has the address SUBNET.(i+1) on
    ``interfaces[i]``."""

    def __init__(self, nodes: int = 4, rate: str = "100mbit", burst: str = "32kbit", latency: str = "50ms"):
        super().__init__(rate, burst, latency)
        pid = os.getpid()
        self.nodes = nodes
        # named like NodePair's (PREFIX-<pid>-<pair><letter>) so remove_stale cleans up after a SIGKILL
        self.switch = f"{cluster.PREFIX}-{pid}-99s"
        self.namespaces = [f"{cluster.PREFIX}-{pid}-99{chr(ord('a') + i)}" for i in range(nodes)]
        short = pid % 10**7  # interface names have at most 15 characters
        self.interfaces = [f"gs{short}n{i}" for i in range(nodes)]
        self.ports = [f"gs{short}p{i}" for i in range(nodes)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(nodes)]

    def _shape(self, namespace: str, dev: str) -> None:
        r = subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                            "rate", self.rate, "burst", self.burst, "latency", self.latency],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise cluster.NetnsError(f"tc tbf on {dev} failed: {r.stderr.strip() or r.returncode}")

    def create(self) -> None:
        cluster.remove_stale()
        for ns in (self.switch, *self.namespaces):
            cluster._ip("netns", "add", ns)
            self._made.append(ns)
        cluster._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        cluster._ip("-n", self.switch, "link", "set", "br0", "up")
        for ns, dev, port, addr in zip(self.namespaces, self.interfaces, self.ports, self.addresses):
            cluster._ip("link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
            cluster._ip("-n", self.switch, "link", "set", port, "master", "br0")
            cluster._ip("-n", self.switch, "link", "set", port, "up")
            cluster._ip("-n", ns, "link", "set", "lo", "up")
            cluster._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            cluster._ip("-n", ns, "link", "set", dev, "up")
            if self.rate:
                self._shape(ns, dev)  # what the node sends
                self._shape(self.switch, port)  # what it receives


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM/SIGHUP: unwind through the clean-up like Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="lm,resnet20", help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--steps", type=int, default=30, help="iterations per worker, every configuration")
    parser.add_argument("--rate", default="100mbit", help="each node's link rate, tc syntax (a bare number: Mbit/s)")
    parser.add_argument("--nodes", type=int, default=4, help="nodes (one worker each)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats; the table shows medians")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder with ptb/ and cifar10-jpeg.tar.gz (sets REPRO_PTB_DIR / REPRO_CIFAR10_DIR)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per job")
    parser.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "gossip_cluster.csv")
    args = parser.parse_args()
    rate = f"{args.rate}mbit" if args.rate.replace(".", "", 1).isdigit() else args.rate
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise SystemExit(f"gossip_cluster: unknown task {', '.join(unknown) or '(none)'} (known: {', '.join(TASKS)})")
    if args.steps < 1 or args.nodes < 3 or args.repeats < 1:
        raise SystemExit("gossip_cluster: need --steps >= 1, --nodes >= 3 (a ring), --repeats >= 1")
    reason = cluster.unavailable()
    if reason:
        raise SystemExit(f"gossip_cluster: {reason}")
    os.environ.setdefault("REPRO_PTB_DIR", str((args.data_root / "ptb").resolve()))
    os.environ.setdefault("REPRO_CIFAR10_DIR", str((args.data_root / "cifar10-jpeg.tar.gz").resolve()))
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f}: the seconds mean something only on a quiet machine", flush=True)
    rows, job = [], 0
    common = ["--max-steps", str(args.steps), "--eval-batches", "1", "--machines", "1", "--run-opt", "quiet=true"]
    try:
        with NodeStar(args.nodes, rate=rate) as star, tempfile.TemporaryDirectory(prefix="repro-gossip-") as tmp:
            for repeat in range(args.repeats):
                for task in tasks:
                    for policy, flags in POLICIES.items():
                        out = Path(tmp) / f"job{job}"
                        out.mkdir()
                        result = multinode.time_job(star, [*TASKS[task], *flags, *common], 29500 + 10 * (job % 200),
                                                    out, args.timeout)
                        job += 1
                        last = result["last"]
                        steps = int(last["iteration"])
                        rows.append({"task": task, "sync": policy, "repeat": repeat, "steps": steps,
                                     "process_s": result["seconds"], "train_s": float(last["wall_seconds"]),
                                     "s_per_step": float(last["wall_seconds"]) / steps,
                                     "MB_sent_per_step": float(last["bytes_sent"]) / steps / 1e6,
                                     "MB_received_per_step": float(last["bytes_received"]) / steps / 1e6})
                        print(f"{task} {policy} (repeat {repeat + 1}/{args.repeats}): {rows[-1]['s_per_step']:.3f} "
                              f"s/step, {rows[-1]['MB_sent_per_step']:.2f} MB sent per step per worker", flush=True)
    except KeyboardInterrupt:
        raise SystemExit("gossip_cluster: interrupted; namespaces removed")
    each = pd.DataFrame(rows)
    if args.repeats > 1:
        print(each.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    table = (each.groupby(["task", "sync"], sort=False)
             .agg(steps=("steps", "first"), s_per_step=("s_per_step", "median"), process_s=("process_s", "median"),
                  MB_sent_per_step=("MB_sent_per_step", "first"),
                  MB_received_per_step=("MB_received_per_step", "first"), repeats=("repeat", "count"))
             .reset_index())
    print(f"{args.nodes} nodes x 1 worker, each node's link {rate} (tc tbf both ways, no added delay), "
          f"{args.steps} steps" + (f", medians of {args.repeats} repeats" if args.repeats > 1 else ""))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for task in tasks:
        mine = table[table["task"] == task].set_index("sync")
        ratio = mine.loc["every-step", "s_per_step"] / mine.loc["dpsgd-ring", "s_per_step"]
        every, ring = mine.loc["every-step", "MB_sent_per_step"], mine.loc["dpsgd-ring", "MB_sent_per_step"]
        print(f"{task}: every-step / ring seconds per step {ratio:.2f}x; bytes sent per step per worker "
              f"{every:.2f} MB vs {ring:.2f} MB")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False, float_format="%.4f")
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
