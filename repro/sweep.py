"""`repro sweep`: the cartesian product of comma-separated flag values, each cell one `repro run` process.

Cells run K at a time (`--jobs K`); each gets its own devices (CUDA_VISIBLE_DEVICES: the GPUs are dealt into K
disjoint groups, one per job slot) or, on CPU, cores / K threads. `--shard i/n` keeps the i-th of n disjoint slices
of the grid (cells i, i + n, i + 2n, ...), so a Slurm job array covers a grid with no two tasks running the same cell;
inside an array job the shard comes from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT. A thread pool over
processes is all the scheduling there is: a cluster's scheduler does the rest.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from repro.components import key_value_flags
from repro.cores import usable_cores
from repro.errors import UsageError

QUIET = ("--run-opt", "quiet=true")  # a cell's `repro run` prints no progress bar or epoch lines


def asks_quiet(argv: list[str]) -> bool:
    """Whether a `repro run` command line asks for no progress output (`--run-opt quiet=true`, or `--quiet`)."""
    return any(a in ("--quiet", "-q") or (a.lower() in ("quiet=true", "quiet=1") and i > 0 and argv[i - 1] == QUIET[0])
               for i, a in enumerate(argv))


def parse_grid(task: str, args: list[str]) -> list[list[str]]:
    """`--lr 0.1,1 --interval 2,4` -> one argv per cell (the product of the listed values). A KEY=VALUE flag
    (`--optimizer-opt weight_decay=0,1e-4`, `--set`, `--train-opt`, every kind's `--KIND-opt`) makes one cell per
    value of its key."""
    axes: list[list[list[str]]] = []
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("-"):
            raise UsageError(f"unexpected argument {flag!r} (flags look like --lr 0.1,1)")
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            key, sep, values = value.partition("=")
            if flag in key_value_flags() and sep and values.startswith("["):  # KEY=[a,b]: one list-valued
                axes.append([[flag, value]])  # setting (--train-opt log_stats=[1,150])
            elif flag in key_value_flags() and sep:  # --set emsize=16,32: one cell per value of the key
                axes.append([[flag, f"{key}={v}"] for v in values.split(",")])
            else:
                axes.append([[flag, v] for v in value.split(",")])
            i += 2
        else:
            axes.append([[flag]])
            i += 1
    return [[task, *itertools.chain.from_iterable(c)] for c in itertools.product(*axes)]


def parse_shard(text: str | None, environ: dict = os.environ) -> tuple[int, int]:
    """(index, count) from `--shard i/n` (0 <= i < n), else from a Slurm array job, else (0, 1)."""
    if text is None:
        if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
            index = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
            return index, int(environ["SLURM_ARRAY_TASK_COUNT"])
        return 0, 1
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard expects i/n with 0 <= i < n, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise UsageError(f"--shard expects i/n with 0 <= i < n, got {text!r}")
    return index, count


def device_groups(jobs: int, gpus: list[int]) -> list[dict[str, str]]:
    """The environment of each job slot: its own GPUs, or its share of the CPU cores."""
    if gpus:
        groups = [gpus[j::jobs] for j in range(jobs)]
        if any(not g for g in groups):
            raise UsageError(f"--jobs {jobs} needs at least {jobs} GPUs, {len(gpus)} given: lower --jobs")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(map(str, g))} for g in groups]
    threads = str(max(1, usable_cores() // jobs))
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "REPRO_THREADS": threads}] * jobs


@dataclass
class Cell:
    argv: list[str]
    status: str = "pending"  # running, done, diverged, failed, skipped, interrupted
    run_dir: str | None = None
    log: Path | None = None
    started: float = 0.0
    returncode: int | None = None
    epochs_done: int = 0
    epochs: int = 0
    extra: dict = field(default_factory=dict)


class Sweep:
    """Runs cells as `repro run` processes, K at a time, and reports one line per running cell."""

    def __init__(self, cells: list[list[str]], jobs: int, slots: list[dict[str, str]], log_dir: Path, quiet: bool):
        self.cells = [Cell(argv) for argv in cells]
        self.jobs, self.quiet = jobs, quiet
        self.free_slots = list(range(jobs))
        self.slots = slots
        self.lock = threading.Lock()
        self.log_dir = log_dir
        self.stopping = False
        self.procs: dict[int, subprocess.Popen] = {}
        self.finished = 0

    def _said_finished(self, cell: Cell) -> None:
        """One line per finished cell, also when the live table cannot show (jobs 1, a log file, a batch job)."""
        from rich.console import Console

        with self.lock:  # numbered and printed under one lock: the lines come out in their numbers' order
            self.finished += 1
            line = (f"[{self.finished}/{len(self.cells)}] {cell.status} in {time.monotonic() - cell.started:.0f}s: "
                    f"repro run {' '.join(cell.argv)}" + (f" -> {cell.run_dir}" if cell.run_dir else ""))
            Console(stderr=True, highlight=False).print(line, markup=False, soft_wrap=True)

    def _run_cell(self, index: int) -> None:
        cell = self.cells[index]
        if self.stopping:
            cell.status = "interrupted"
            return
        with self.lock:
            slot = self.free_slots.pop()
        report = self.log_dir / f"cell{index:04d}.json"
        cell.log = self.log_dir / f"cell{index:04d}.log"
        argv = [sys.executable, "-m", "repro", "run", *cell.argv, "--skip-completed", "--report", str(report)]
        if self.jobs > 1 and not asks_quiet(argv):
            argv += QUIET
        env = {**os.environ, **self.slots[slot]}
        cell.status, cell.started = "running", time.monotonic()
        try:
            with open(cell.log, "w") as log:
                output = None if self.jobs == 1 and not self.quiet else log
                proc = subprocess.Popen(argv, env=env, stdout=output, stderr=output if output else None)
                self.procs[index] = proc
                cell.returncode = proc.wait()
        finally:
            self.procs.pop(index, None)
            with self.lock:
                self.free_slots.append(slot)
        info = json.loads(report.read_text()) if report.exists() else {}
        cell.run_dir = info.get("run_dir")
        if self.stopping and cell.returncode != 0:
            cell.status = "interrupted"
        elif cell.returncode != 0:
            cell.status = "failed"
        else:
            cell.status = info.get("status") or "done"
        self._said_finished(cell)

    def _progress(self, cell: Cell) -> str:
        if cell.run_dir is None:
            report = self.log_dir / f"cell{self.cells.index(cell):04d}.json"
            if report.exists():
                try:
                    info = json.loads(report.read_text())
                    cell.run_dir, cell.epochs = info.get("run_dir"), info.get("epochs", 0)
                except ValueError:
                    pass
        if cell.run_dir:
            metrics = Path(cell.run_dir) / "metrics.csv"
            if metrics.exists():
                cell.epochs_done = max(0, sum(1 for _ in metrics.open()) - 1)
        return f"epoch {cell.epochs_done}/{cell.epochs or '?'}"

    def run(self) -> list[Cell]:
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table

        console = Console(stderr=True)
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        futures = [pool.submit(self._run_cell, i) for i in range(len(self.cells))]
        began = time.monotonic()

        def table() -> Table:
            grid = Table.grid(padding=(0, 2))
            finished = [c for c in self.cells if c.status not in ("pending", "running")]
            for cell in self.cells:
                if cell.status == "running":
                    grid.add_row("[cyan]running", " ".join(cell.argv), self._progress(cell),
                                 f"{time.monotonic() - cell.started:.0f}s")
            eta = ""
            ran = [c for c in finished if c.status in ("done", "diverged", "failed")]
            if ran:
                per_cell = (time.monotonic() - began) / len(finished)
                eta = f"  ETA {per_cell * (len(self.cells) - len(finished)):.0f}s"
            grid.add_row("[bold]grid", f"{len(finished)}/{len(self.cells)} cells finished{eta}", "", "")
            return grid

        previous = signal.getsignal(signal.SIGINT)

        def interrupt(signum, frame):
            # Ctrl-C: every running cell gets SIGINT (they stop cleanly); no new cell starts.
            self.stopping = True
            for proc in list(self.procs.values()):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)

        signal.signal(signal.SIGINT, interrupt)
        try:
            if self.jobs > 1 and not self.quiet:
                with Live(table(), console=console, refresh_per_second=2, transient=True) as live:
                    while not all(f.done() for f in futures):
                        time.sleep(0.5)
                        live.update(table())
            for f in futures:
                f.result()
        finally:
            signal.signal(signal.SIGINT, previous)
            pool.shutdown(wait=True)
        return self.cells


def summary(cells: list[Cell]) -> str:
    counts = {s: sum(c.status == s for c in cells) for s in ("done", "diverged", "failed", "skipped", "interrupted")}
    return "sweep: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("done", "failed"))


def run_sweep(task: str, args: list[str], jobs: int, gpus: list[int] | None, shard: str | None, dry_run: bool,
              validate, echo) -> int:
    """Validate every cell, then run this shard's cells; returns the exit code (1 if any cell failed)."""
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    return run_cells(parse_grid(task, args), jobs, gpus, shard, dry_run, validate, echo,
                     quiet=asks_quiet(args))


def run_cells(cells: list[list[str]], jobs: int, gpus: list[int] | None, shard: str | None, dry_run: bool,
              validate, echo, quiet: bool = False) -> int:
    """Validate every cell (a `repro run` argv), then run this shard's cells K at a time; the exit code."""
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    for argv in cells:  # validate every combination before starting any
        validate(argv)
    index, count = parse_shard(shard)
    mine = cells[index::count]
    if dry_run:
        for n, argv in enumerate(mine, 1):
            echo(f"[{n}/{len(mine)}] repro run {' '.join(argv)}")
        echo(f"shard {index}/{count}: {len(mine)} of {len(cells)} cells")
        return 0
    if gpus is None:
        import torch

        gpus = list(range(torch.cuda.device_count()))
    slots = device_groups(min(jobs, max(1, len(mine))), gpus)
    log_dir = Path(tempfile.mkdtemp(prefix="repro-sweep-"))
    if jobs > 1 and not quiet:
        echo(f"sweep: {len(mine)} cells, {len(slots)} at a time; cell logs in {log_dir}")
    result = Sweep(mine, len(slots), slots, log_dir, quiet).run()
    for cell in result:
        if cell.status == "failed":
            echo(f"failed: repro run {' '.join(cell.argv)} (log: {cell.log})")
    echo(summary(result))
    if any(c.status == "interrupted" for c in result):
        return 130
    return 1 if any(c.status == "failed" for c in result) else 0
