"""The every-step baseline's gradient all-reduce, flat against DDP-bucketed, side by side in one run.

    python benchmarks/every_step_buckets.py --data-dir ../shared/data/ptb --machines 2 --steps 100 --repeats 2

`--sync every-step --sync-opt bucketed=false` all-reduces all gradients in one flat tensor after backward;
the default (bucketed=true) trains through DistributedDataParallel, whose reducer all-reduces buckets while backward
still runs. Both train the same task for the same steps per worker (clipped SGD, naive parallel clipping), alternating
--repeats times so a change in the machine's load hits both alike; prints the median training seconds per step
(`wall_seconds / iteration` of the last metrics row) and flat / bucketed, and writes the table to --csv. On one CPU
box gloo's all-reduce is a memory copy, so the overlap has little to hide: expect a ratio near 1 there; the gap opens
where communication is slow (benchmarks/multinode.py takes --sync-opt too).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"flat": ["--sync-opt", "bucketed=false"], "bucketed (DDP)": ["--sync-opt", "bucketed=true"]}


def run(args, extra: list[str], out: Path) -> pd.Series:
    cmd = [sys.executable, "-m", "repro", "run", args.task, "--machines", str(args.machines), "--preset", args.preset,
           "--algo", "naive-parallel-clip", "--max-steps", str(args.steps), "--eval-batches", "1",
           "--run-opt", "quiet=true", "--out", str(out), *extra]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    subprocess.run(cmd, check=True, cwd=REPO)
    (metrics,) = out.glob(f"{args.task}/*/metrics.csv")
    return pd.read_csv(metrics).iloc[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="lstm-ptb")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data-dir")
    parser.add_argument("--machines", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "every_step_buckets.csv")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="repro-buckets-") as tmp:
        for repeat in range(args.repeats):
            for name, extra in CONFIGS.items():
                last = run(args, extra, Path(tmp) / f"{name}-{repeat}".replace(" ", "_"))
                runs.append({"sync": name, "s_per_step": last["wall_seconds"] / last["iteration"],
                             "comm_rounds": int(last["comm_rounds"]), "comm_MB": last["comm_bytes"] / 1e6})
                print(f"{name} #{repeat + 1}: {runs[-1]['s_per_step']:.4f} s/step", flush=True)
    table = (pd.DataFrame(runs).groupby("sync", sort=False)
             .agg(s_per_step=("s_per_step", "median"), runs=("s_per_step", "size"),
                  comm_rounds=("comm_rounds", "first"), comm_MB=("comm_MB", "first")).reset_index())
    table["flat_over_this"] = table["s_per_step"].iloc[0] / table["s_per_step"]
    print(f"every-step on {args.task} ({args.preset}), {args.machines} local workers, {args.steps} steps each, "
          f"median of {args.repeats}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False, float_format="%.4f")
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
