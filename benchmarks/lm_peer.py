"""One epoch of the quick LM in `repro` against pytorch/examples' word_language_model, alternating, one process each.

    python benchmarks/lm_peer.py --peer PATH/TO/examples/word_language_model --data-dir ../shared/data/ptb --repeats 3

The peer is the example as published (LSTM 2 x 200, tied, dropout 0.2, batch 20, BPTT 35, lr 20, clip 0.25: the
quick recipe's model and step), given PTB through a folder of links named as it expects; its code is not part of
this repository (clone pytorch/examples anywhere). Both run one epoch with the machine's cores as threads, in the
order peer, repro, peer, repro, ... Each side's training ms/batch: the peer's own log lines (ms/batch of each
--log-interval window, weighted by its batches, the last partial window left out), repro's `wall_seconds` / steps of
its metrics.csv (training only: evaluation excluded, as in the peer's windows). Prints each pair and the medians;
ratio = peer ms/batch / repro ms/batch (>= 1: repro at least as fast). Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WINDOW = re.compile(r"\|\s+(\d+)/\s*(\d+) batches .*ms/batch\s+([\d.]+)")


def peer_ms_per_batch(peer: Path, corpus: Path, log_interval: int, work: Path) -> float:
    data = work / "ptb"
    data.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        link = data / f"{split}.txt"
        if not link.exists():
            link.symlink_to((corpus / f"ptb.{split}.txt").resolve())
    out = subprocess.run([sys.executable, "main.py", "--data", str(data), "--epochs", "1", "--tied",
                          "--log-interval", str(log_interval), "--save", str(work / "model.pt")],
                         cwd=peer, capture_output=True, text=True, check=True).stdout
    windows = [float(m.group(3)) for m in WINDOW.finditer(out)]
    if not windows:
        raise SystemExit(f"lm_peer: no ms/batch lines in the peer's output:\n{out[-2000:]}")
    return statistics.fmean(windows)


def repro_ms_per_batch(corpus: Path, work: Path) -> float:
    out = work / "repro"
    subprocess.run(["repro", "run", "lstm-ptb", "--preset", "quick", "--machines", "1", "--sync", "none",
                    "--epochs", "1", "--data-dir", str(corpus), "--out", str(out), "--run-opt", "quiet=true"],
                   check=True)
    (metrics,) = out.glob("lstm-ptb/*/metrics.csv")
    last = list(csv.DictReader(metrics.open()))[-1]
    return 1000.0 * float(last["wall_seconds"]) / float(last["iteration"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", type=Path, required=True, help="pytorch/examples' word_language_model folder")
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data/ptb"), help="PTB (ptb.train.txt, ...)")
    p.add_argument("--repeats", type=int, default=3, help="alternating pairs (peer, then repro)")
    p.add_argument("--log-interval", type=int, default=200, help="the peer's logging window in batches")
    a = p.parse_args()
    pairs = []
    for r in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            peer = peer_ms_per_batch(a.peer, a.data_dir, a.log_interval, Path(tmp))
            ours = repro_ms_per_batch(a.data_dir, Path(tmp))
        pairs.append((peer, ours))
        print(f"pair {r + 1}/{a.repeats}: peer {peer:.1f} ms/batch, repro {ours:.1f} ms/batch, "
              f"peer / repro {peer / ours:.3f}", flush=True)
    peer_med, ours_med = (statistics.median(x) for x in zip(*pairs))
    print(f"median: peer {peer_med:.1f} ms/batch, repro {ours_med:.1f} ms/batch, peer / repro "
          f"{peer_med / ours_med:.3f}; per pair: {', '.join(f'{p / o:.3f}' for p, o in pairs)}")


if __name__ == "__main__":
    main()
