"""Wall-clock of CELGC (periodic model averaging) against the every-step baseline, in one run.

    python benchmarks/celgc_speed.py --data-dir ../shared/data/ptb --machines 4 --steps 200 --intervals 4,16

Each configuration trains the same task for the same number of steps per worker, one after another, and the
script prints training seconds per step and the speed-up ratio against gradient all-reduce every step (--csv: also
writes that table; benchmarks/suite.py reads it). The
paper's 2-2.5x comes from multi-GPU clusters where communication dominates; on one CPU box communication is
cheap, so expect ratios near 1 there.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd


def run(task: str, algo: list[str], args, out: Path) -> pd.Series:
    cmd = [sys.executable, "-m", "repro", "run", task, "--machines", str(args.machines), "--preset", args.preset,
           "--max-steps", str(args.steps), "--eval-batches", "1", "--run-opt", "quiet=true", "--out", str(out), *algo]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    subprocess.run(cmd, check=True)
    newest = max((out / task).glob("*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    return pd.read_csv(newest).iloc[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="lstm-ptb")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data-dir")
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--intervals", default="4,16")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    args = parser.parse_args()
    configs = [("every-step", ["--algo", "naive-parallel-clip"])]
    configs += [(f"periodic I={i}", ["--algo", "celgc", "--interval", i]) for i in args.intervals.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, algo in configs:
            last = run(args.task, algo, args, Path(tmp))
            rows.append({"sync": name, "s_per_step": last["wall_seconds"] / last["iteration"],
                         "comm_rounds": int(last["comm_rounds"]), "comm_MB": last["comm_bytes"] / 1e6})
    table = pd.DataFrame(rows)
    table["speedup_vs_every_step"] = table["s_per_step"].iloc[0] / table["s_per_step"]
    print(f"{args.task} ({args.preset}), {args.machines} workers, {args.steps} steps each")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False, float_format="%.4f")


if __name__ == "__main__":
    main()
