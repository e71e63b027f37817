"""Quantized Adam on a parameter server against Adam with every-step all-reduce, on the emulated two-node cluster.

    python benchmarks/qadam_speed.py --task lstm-ptb --data-dir ../shared/data/ptb --steps 64 --rate 100mbit
    python benchmarks/qadam_speed.py --task resnet20-cifar10 --data-dir ../shared/data --set data_format=jpeg --steps 64

The cluster is benchmarks/multinode.py's (two network namespaces joined by a --rate veth pair; run as root). Both
configurations train with ``--optimizer adam`` for the same --steps per worker: ``every-step`` (DDP's bucketed
all-reduce of float32 gradients) and ``quantized-ps`` (--bits-up bits up: 1 = scaled sign with error feedback;
--bits-down bits of uniform weight quantization back; rank 0 is the server). Prints each configuration's training
seconds and whole-process seconds, the every-step / quantized-ps ratios, and the bytes per step each worker sent
(from the run's ledger); writes the table to --csv. Speed is measured on a quiet machine, never in tests.
"""
from __future__ import annotations

import argparse
import signal
import tempfile
from pathlib import Path

import pandas as pd

import multinode

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    multinode.cluster_arguments(parser, steps=64)
    parser.add_argument("--bits-up", type=int, default=1)
    parser.add_argument("--bits-down", type=int, default=8)
    parser.add_argument("--lr", default="0.001")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="task_options",
                        help="task option for both configurations (repeatable), e.g. data_format=jpeg for the "
                             "offline CIFAR-10 JPEG copy")
    parser.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "qadam_speed.csv")
    args = parser.parse_args()
    rate = f"{args.rate}mbit" if args.rate.replace(".", "", 1).isdigit() else args.rate
    netns = multinode.netns
    reason = netns.unavailable()
    if reason:
        raise SystemExit(f"qadam_speed: {reason}")
    signal.signal(signal.SIGTERM, multinode._stop)
    signal.signal(signal.SIGHUP, multinode._stop)
    quantizer = "scaled-sign" if args.bits_up == 1 else "uniform"
    adam = ["--optimizer", "adam", "--lr", args.lr, *(f for kv in args.task_options for f in ("--set", kv))]
    configs = [("every-step adam", [*adam, "--sync", "every-step"]),
               (f"quantized-ps {args.bits_up}/{args.bits_down} bits",
                [*adam, "--sync", "quantized-ps", "--sync-opt", f"quantizer={quantizer}",
                 "--sync-opt", f"bits_up={args.bits_up}", "--sync-opt", f"bits_down={args.bits_down}"])]
    rows = []
    try:
        with netns.NodePair(rate=rate) as pair, tempfile.TemporaryDirectory(prefix="repro-qadam-") as tmp:
            for i, (name, algo) in enumerate(configs):
                out = Path(tmp) / f"job{i}"
                out.mkdir()
                result = multinode.run_job(pair, args, algo, 29600 + 10 * i, out)
                last = result["last"]
                steps = int(last["iteration"])
                rows.append({"sync": name, "steps": steps, "workers": 2 * args.machines, "rate": rate,
                             "process_s": result["seconds"], "train_s": last["wall_seconds"],
                             "payload_bytes_per_step": last["comm_bytes"] / max(steps, 1),
                             "sent_bytes_per_step": last.get("bytes_sent", float("nan")) / max(steps, 1)})
                print(f"{name}: {result['seconds']:.1f} s whole process, {last['wall_seconds']:.1f} s training",
                      flush=True)
    except KeyboardInterrupt:
        raise SystemExit("qadam_speed: interrupted; namespaces removed")
    table = pd.DataFrame(rows)
    table["train_s_per_step"] = table["train_s"] / table["steps"]
    table["train_ratio"] = table["train_s"].iloc[0] / table["train_s"]
    table["process_ratio"] = table["process_s"].iloc[0] / table["process_s"]
    print(f"{args.task} ({args.preset}), 2 nodes x {args.machines} workers, {args.steps} steps each, link {rate}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False, float_format="%.3f")
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
