"""CELGC against every-step all-reduce on an emulated two-node cluster (network namespaces, rate-limited link), in one run.

    python benchmarks/multinode.py --data-dir ../shared/data/ptb --steps 96 --rate 100mbit --interval 16

Two network namespaces on this machine stand in for two nodes, joined by a veth pair that a token bucket
(`tc ... tbf`) holds to --rate on both ends (repro/emulated_cluster.py; run as root, with iproute2). One `repro run`
runs in each namespace as node 0 and node 1 (--machines workers each, gloo on CPU), first with gradient all-reduce every step
(--algo naive-parallel-clip: DDP's bucketed all-reduce), then with CELGC averaging every --interval steps, for the
same --steps per worker (--with-flat: then every-step with one flat all-reduce after backward, nothing overlapped).
The workers of one node talk over its loopback at full speed; only traffic between the nodes crosses the slow link,
as between the machines of a cluster. Prints, per configuration, the whole process's seconds (both nodes started
until both exited: start-up, data, training, evaluation) and the training seconds (`wall_seconds` of the last
metrics.csv row), and the every-step / configuration ratios; writes the table to --csv. The namespaces (and
anything left running in them) are removed on exit, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from repro import emulated_cluster as netns

REPO = Path(__file__).resolve().parents[1]
TASK_ARGS = ["--eval-batches", "1", "--run-opt", "quiet=true"]


def time_job(nodes, argv: list[str], port: int, out: Path, timeout: float) -> dict:
    """`repro run ARGV` on every node of ``nodes`` (an emulated NodePair or NodeStar: its ``addresses`` and
    ``command``) as one multi-node job, node k writing under out/nodeK; returns the whole process's seconds (every
    node started until every node exited) and node 0's last metrics row. A failed node ends the benchmark with the
    tail of its log; nodes still running at the timeout are killed."""
    env = {**netns.clean_environment(), "OMP_NUM_THREADS": "1"}
    count = len(nodes.addresses)
    procs, start = [], time.perf_counter()
    try:
        for node in range(count):
            rendezvous = {"nodes": count, "node_rank": node, "master_addr": nodes.addresses[0], "master_port": port}
            cmd = [sys.executable, "-m", "repro", "run", *argv, "--out", str(out / f"node{node}"),
                   *(flag for key, value in rendezvous.items() for flag in ("--run-opt", f"{key}={value}"))]
            log = open(out / f"node{node}.log", "w")
            procs.append((subprocess.Popen(nodes.command(node, cmd), cwd=REPO, env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log))
        for p, _ in procs:
            p.wait(timeout=max(1.0, start + timeout - time.perf_counter()))
        seconds = time.perf_counter() - start
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    for node, (p, _) in enumerate(procs):
        if p.returncode != 0:
            tail = "\n".join((out / f"node{node}.log").read_text(errors="replace").splitlines()[-15:])
            raise SystemExit(f"node {node} of {' '.join(argv)} exited {p.returncode}:\n{tail}")
    metrics = list((out / "node0").rglob("metrics.csv"))
    if len(metrics) != 1:
        raise SystemExit(f"expected one run folder from node 0, found {len(metrics)}")
    return {"seconds": seconds, "last": pd.read_csv(metrics[0]).iloc[-1]}


def run_job(pair, args, algo: list[str], port: int, out: Path) -> dict:
    """Both nodes of one job of the parsed ``args`` (cluster_arguments) with the sync flags ``algo``."""
    argv = [args.task, "--preset", args.preset, "--machines", str(args.machines), "--max-steps", str(args.steps),
            *TASK_ARGS, *algo, *(["--data-dir", args.data_dir] if args.data_dir else [])]
    return time_job(pair, argv, port, out, args.timeout)


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM/SIGHUP: unwind through the clean-up like Ctrl-C


def cluster_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """The flags every benchmark on the two-node cluster takes (run_job reads them)."""
    parser.add_argument("--task", default="lstm-ptb")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data-dir")
    parser.add_argument("--machines", type=int, default=2, help="workers per node (2 nodes)")
    parser.add_argument("--steps", type=int, default=steps, help="iterations per worker, both configurations")
    parser.add_argument("--rate", default="100mbit", help="link rate, tc syntax (a bare number: Mbit/s)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cluster_arguments(parser, steps=96)
    parser.add_argument("--interval", type=int, default=16, help="CELGC's averaging interval I")
    parser.add_argument("--with-flat", action="store_true",
                        help="also every-step with the flat all-reduce after backward (--sync-opt bucketed=false)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternating repeats of every configuration; the table shows medians (and each repeat)")
    parser.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "multinode.csv")
    args = parser.parse_args()
    rate = f"{args.rate}mbit" if args.rate.replace(".", "", 1).isdigit() else args.rate

    reason = netns.unavailable()
    if reason:
        raise SystemExit(f"multinode: {reason}")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    configs = [("every-step", ["--algo", "naive-parallel-clip"]),
               (f"celgc I={args.interval}", ["--algo", "celgc", "--interval", str(args.interval)])]
    if args.with_flat:
        configs.append(("every-step flat", ["--algo", "naive-parallel-clip", "--sync-opt", "bucketed=false"]))
    rows = []
    try:
        with netns.NodePair(rate=rate) as pair, tempfile.TemporaryDirectory(prefix="repro-multinode-") as tmp:
            for repeat in range(args.repeats):  # alternating, so a drift of the machine hits every configuration
                for i, (name, algo) in enumerate(configs):
                    out = Path(tmp) / f"job{repeat}-{i}"
                    out.mkdir()
                    result = run_job(pair, args, algo, 29500 + 10 * i + 100 * (repeat % 2), out)
                    last = result["last"]
                    rows.append({"sync": name, "repeat": repeat, "steps": int(last["iteration"]),
                                 "workers": 2 * args.machines, "rate": rate, "process_s": result["seconds"],
                                 "train_s": last["wall_seconds"], "comm_rounds": int(last["comm_rounds"]),
                                 "comm_MB": last["comm_bytes"] / 1e6})
                    print(f"{name} (repeat {repeat + 1}/{args.repeats}): {result['seconds']:.1f} s whole process, "
                          f"{last['wall_seconds']:.1f} s training", flush=True)
    except KeyboardInterrupt:
        raise SystemExit("multinode: interrupted; namespaces removed")
    each = pd.DataFrame(rows)
    if args.repeats > 1:
        print(each.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    order = [name for name, _ in configs]
    table = (each.groupby("sync", sort=False)
             .agg(steps=("steps", "first"), workers=("workers", "first"), rate=("rate", "first"),
                  process_s=("process_s", "median"), train_s=("train_s", "median"),
                  comm_rounds=("comm_rounds", "first"), comm_MB=("comm_MB", "first"), repeats=("repeat", "count"))
             .reindex(order).reset_index())
    table["process_ratio"] = table["process_s"].iloc[0] / table["process_s"]
    table["train_ratio"] = table["train_s"].iloc[0] / table["train_s"]
    print(f"{args.task} ({args.preset}), 2 nodes x {args.machines} workers, {args.steps} steps each, link {rate}"
          + (f", medians of {args.repeats} repeats" if args.repeats > 1 else ""))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    celgc = table.iloc[1]
    print(f"every-step / CELGC: {celgc['process_ratio']:.2f}x whole process, {celgc['train_ratio']:.2f}x training")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False, float_format="%.3f")
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
