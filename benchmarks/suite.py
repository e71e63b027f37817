"""Speed measured against peers and the hardware (issue 12): one command, every comparison, one CSV.

    python benchmarks/suite.py --data-root ../shared/data              # everything, at the sizes below
    python benchmarks/suite.py --quick                                 # a smoke check: a few steps of each
    python benchmarks/suite.py --sections overhead,startup --repeats 5 # some sections only

Sections (each prints a table of ratios; every number also goes to --csv, long format: section, config, metric,
value, unit, baseline, ratio, goal, note; the machine's facts are the rows of section "machine"):

  overhead  `repro run TASK --preset quick --machines 1 --sync none --max-steps STEPS+1 --eval-batches 1` against
            benchmarks/bare_loop.py (a hand-written loop: same model, data, batch, optimizer, threads) for the quick
            LM, ResNet-20 on CIFAR-10 and the SGDOL CNN on Fashion-MNIST, alternating --repeats times (ABBA order).
            Training samples/s of each (median) and repro / bare; goal >= 0.98. repro's side is `wall_seconds` of
            the last metrics.csv row: training time only (the clock starts before the first step of each epoch and
            stops after its last; evaluation, checkpoints and start-up are outside it). It includes the first, cold
            step, so the bare side is timed the same way: its warm-up step plus STEPS steps (the bare loop's steady
            rate after warm-up is listed too).
  startup   wall time of `python -c "import torch"`, of `python -c "import torch, torch._dynamo"` (building any torch
            optimizer imports torch._dynamo: the floor of every run), and of a 1-step smoke run `repro run lstm-ptb
            --preset quick --max-steps 1 --eval-batches 1` with --machines 1 and 4 (data, evaluation, checkpoint,
            logs included), measured alternately, medians; goals <= 2x import torch with 1 worker, <= 3x with 4.
  memory    peak resident memory per worker and in total of resnet20-cifar10 (quick, full training set:
            --set train_subset=0) and the quick LM (its recipe's periodic averaging) with 1, 4 and 8 workers, a few
            steps each. The process tree of the `repro run` is polled in /proc: per process the peak RSS (VmHWM)
            and the peak PSS (smaps_rollup: shared pages, e.g. the memory-mapped decoded CIFAR set and the
            forkserver's copy of torch, divided among the processes sharing them). Total = every process of the
            tree (launcher, forkserver, workers): the largest sum of PSS seen at one poll, and the sum of the peak
            RSSs (which counts shared pages once per process). Ratios total(N) / total(1).
  speedup   aggregate training samples/s of 1, 2, 4, 8 workers of the quick LM with --sync none on this box (each
            worker its own shard; cores shared: max(1, cores // workers) threads each), ratios to 1 worker; beside
            it the ceiling the machine and PyTorch allow: as many independent copies of bare_loop.py, threads
            divided the same way, started together (their samples over the span from the first start to the last
            end, not the sum of their rates: the last to finish runs alone at the end), ratio to 1 copy, and
            repro's ratio / the ceiling's; and the bound of any speed-up: cores x the rate of one copy with one
            thread, against 1 worker (near 1 where one process already uses all its threads well). Each round runs
            every size once; the rows give medians and each round's own ratio (the machine's speed drifts).
  buckets   benchmarks/every_step_buckets.py: the every-step baseline's flat all-reduce against DDP's buckets.
  celgc     benchmarks/celgc_speed.py: CELGC (periodic averaging) against averaging gradients every step.
  gpu       benchmarks/gpu.py where CUDA is available (else one row saying it was not measured): steps/s, GPU memory
            and achieved / peak FLOP/s of ResNet-56 at batch 128 and the paper AWD-LSTM under each GPU switch.

--quick runs 3 steps of each, one repeat, and 1 and 2 workers where the real sizes take 1, 4, 8 (memory) or 1, 2, 4,
8 (speedup): it checks that every section still runs, its numbers mean nothing (the cold first step dominates).
Every size has its option (--help). --threads N sets REPRO_THREADS, the core budget of every run, for a machine
that is busy with other work (a 2-thread process on 2 cores that other processes also use waits on its slower
thread at every parallel operation).

Every measurement is a subprocess (its own process group); Ctrl-C or SIGTERM stops them all, writes the sections
finished so far and exits 130. Timings are as noisy as the machine is busy: the load average is recorded.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SECTIONS = ("overhead", "startup", "memory", "speedup", "buckets", "celgc", "gpu")
OVERHEAD_TASKS = ("lstm-ptb", "resnet20-cifar10", "convnet-fashion-mnist")
MEMORY_TASKS = ("resnet20-cifar10", "lstm-ptb")
MANY_EPOCHS = ["--epochs", "100000"]  # --max-steps ends the run, not the recipe's epochs (5 for SGDOL: 150 steps)
COLUMNS = ("section", "config", "metric", "value", "unit", "baseline", "ratio", "goal", "note")
# Sizes of a real measurement and of --quick (a smoke check that every section still runs).
FULL = dict(steps=200, repeats=3, memory_steps=20, memory_workers="1,4,8", speedup_steps=100,
            speedup_workers="1,2,4,8", buckets_steps=100, buckets_machines=2, celgc_steps=200, celgc_machines=4,
            celgc_intervals="4,16")
QUICK = dict(steps=3, repeats=1, memory_steps=3, memory_workers="1,2", speedup_steps=3, speedup_workers="1,2",
             buckets_steps=3, buckets_machines=2, celgc_steps=4, celgc_machines=2, celgc_intervals="2")
SIZE_HELP = {"steps": "overhead: the bare loop's steps after its warm-up step (repro runs STEPS + 1)",
             "repeats": "overhead, startup, speedup, buckets: alternating repeats (medians)",
             "memory_steps": "memory: steps per run", "memory_workers": "memory: worker counts",
             "speedup_steps": "speedup: steps per worker", "speedup_workers": "speedup: worker counts",
             "buckets_steps": "buckets: steps per run", "buckets_machines": "buckets: workers",
             "celgc_steps": "celgc: steps per run", "celgc_machines": "celgc: workers",
             "celgc_intervals": "celgc: CELGC intervals I"}


# -- /proc: memory of a process tree (no psutil) -----------------------------------------------------------------------
def _parent_map() -> dict[int, int]:
    """pid -> parent pid of every process (field 4 of /proc/PID/stat, after the command name in parentheses)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        parents[int(name)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (children, grandchildren, ...), root first; [] once root has ended."""
    parents = _parent_map()
    if root not in parents:
        return []
    children = defaultdict(list)
    for pid, parent in parents.items():
        children[parent].append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(sorted(children.get(pid, ())))
    return tree


def _kb_fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    values = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in names:
                values[key] = int(rest.split()[0])  # "VmHWM:   123456 kB"
    return values


def process_memory(pid: int) -> dict | None:
    """kB of one process: peak RSS (VmHWM), RSS now (VmRSS), PSS now (smaps_rollup); None if it has ended (or is a
    zombie: no memory left to read)."""
    try:
        status = _kb_fields(f"/proc/{pid}/status", ("VmHWM", "VmRSS"))
        rollup = _kb_fields(f"/proc/{pid}/smaps_rollup", ("Pss",))
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    if "VmHWM" not in status or "Pss" not in rollup:
        return None
    return {"name": name, "peak_rss_kb": status["VmHWM"], "rss_kb": status["VmRSS"], "pss_kb": rollup["Pss"]}


class TreeMemory:
    """Polled memory of a process tree: per process the peak RSS and the largest PSS seen; in total the largest
    sum of PSS (and of RSS) seen at one poll. Workers are the processes named ``repro-rankN`` (a worker names
    itself so); a one-worker run trains in the launching process itself, which is then the one worker."""

    def __init__(self, root: int):
        self.root = root
        self.procs: dict[int, dict] = {}
        self.peak_total_pss_kb = self.peak_total_rss_kb = 0
        self.polls = 0

    def sample(self) -> None:
        pss = rss = 0
        for pid in process_tree(self.root):
            m = process_memory(pid)
            if m is None:
                continue
            rec = self.procs.setdefault(pid, {"name": m["name"], "peak_rss_kb": 0, "peak_pss_kb": 0})
            rec["name"] = m["name"]  # a forked worker renames itself after it starts
            rec["peak_rss_kb"] = max(rec["peak_rss_kb"], m["peak_rss_kb"])
            rec["peak_pss_kb"] = max(rec["peak_pss_kb"], m["pss_kb"])
            pss += m["pss_kb"]
            rss += m["rss_kb"]
        self.peak_total_pss_kb = max(self.peak_total_pss_kb, pss)
        self.peak_total_rss_kb = max(self.peak_total_rss_kb, rss)
        self.polls += 1

    def workers(self) -> list[dict]:
        named = [r for r in self.procs.values() if r["name"].startswith("repro-rank")]
        if named:
            return named
        return [self.procs[self.root]] if self.root in self.procs else []

    def summary(self) -> dict:
        workers = self.workers()
        mb = 1024.0
        return {"processes": len(self.procs), "workers": len(workers), "polls": self.polls,
                "worker_peak_rss_mb_mean": statistics.mean(w["peak_rss_kb"] for w in workers) / mb if workers else 0.0,
                "worker_peak_rss_mb_max": max((w["peak_rss_kb"] for w in workers), default=0) / mb,
                "worker_peak_pss_mb_mean": statistics.mean(w["peak_pss_kb"] for w in workers) / mb if workers else 0.0,
                "worker_peak_pss_mb_max": max((w["peak_pss_kb"] for w in workers), default=0) / mb,
                "others_peak_pss_mb": sum(r["peak_pss_kb"] for r in self.procs.values()
                                          if not any(r is w for w in workers)) / mb,
                "total_peak_pss_mb": self.peak_total_pss_kb / mb,
                "total_sum_peak_rss_mb": sum(r["peak_rss_kb"] for r in self.procs.values()) / mb}


# -- subprocesses that Ctrl-C stops ------------------------------------------------------------------------------------
class Failed(RuntimeError):
    pass


class Runner:
    """Runs each command in its own session (process group), output to a log file; ``stop_all`` ends every group
    still running (SIGTERM, then SIGKILL), workers and forkserver included."""

    def __init__(self, logs: Path, timeout: float, env: dict | None = None):
        self.logs, self.timeout, self.live, self.count, self.stopped = logs, timeout, [], 0, 0
        self.env = env

    def run(self, cmd: list[str], label: str, poll=None, interval: float = 0.2) -> tuple[float, str]:
        """(wall seconds, output); ``poll(pid)`` is called every ``interval`` seconds while it runs."""
        seconds, (output,) = self.run_together([cmd], label, poll=poll, interval=interval)
        return seconds, output

    def run_together(self, cmds: list[list[str]], label: str, env: dict | None = None, poll=None,
                     interval: float = 0.2) -> tuple[float, list[str]]:
        """(wall seconds until the last ends, outputs) of ``cmds`` started at once, each in its own session and log;
        ``poll(pid)`` is called with the first one's pid every ``interval`` seconds while it runs."""
        self.count += 1
        name = f"{self.count:03d}-{label.replace(' ', '_').replace('/', '_')[:60]}"
        logs = [self.logs / (f"{name}.log" if len(cmds) == 1 else f"{name}-{i}.log") for i in range(len(cmds))]
        procs: list[subprocess.Popen] = []
        start = time.perf_counter()
        try:
            for cmd, log_path in zip(cmds, logs):
                with open(log_path, "w") as log:
                    procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True, env=env or self.env))
                self.live.append(procs[-1])
            while True:
                running = [proc for proc in procs if proc.poll() is None]
                if not running:
                    break
                if poll is not None:
                    poll(procs[0].pid)
                try:
                    running[0].wait(timeout=interval if poll is not None else 1.0)
                except subprocess.TimeoutExpired:
                    if time.perf_counter() - start > self.timeout:
                        for proc in running:
                            self._stop(proc)
                        raise Failed(f"{label}: no result after {self.timeout:.0f} s (--timeout); log {logs[0]}")
            seconds = time.perf_counter() - start
        finally:
            for proc in procs:
                if proc.poll() is None:  # interrupted (Ctrl-C, SIGTERM) or timed out
                    self._stop(proc)
                    self.stopped += 1
                self.live.remove(proc)
        outputs = [path.read_text(errors="replace") for path in logs]
        for cmd, proc, output in zip(cmds, procs, outputs):
            if proc.returncode != 0:
                tail = "\n".join(output.splitlines()[-15:])
                raise Failed(f"{label} exited {proc.returncode}: {' '.join(map(str, cmd))}\n{tail}")
        return seconds, outputs

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            try:  # the group may outlive its leader for a moment (workers, forkserver)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return

    def stop_all(self) -> int:
        """Stops what is still running; returns how many were stopped in all."""
        for proc in list(self.live):
            self._stop(proc)
            self.stopped += 1
        return self.stopped


# -- the measurements --------------------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    config: str
    metric: str
    value: object
    unit: str = ""
    baseline: float | None = None
    ratio: float | None = None
    goal: str = ""
    note: str = ""


def together_samples_per_s(copies: list[dict]) -> float:
    """All the copies' timed samples over the span from the first start to the last end. Not the sum of their own
    rates: a copy that finishes last ran alone on a freed core at the end, and summing rates counts that speed as
    if all had it (4 LM copies on 2 cores: 4-6 % above the span's rate)."""
    first = min(c["started_at"] for c in copies)
    last = max(c["started_at"] + c["seconds"] for c in copies)
    return sum(c["samples"] for c in copies) / (last - first)


def say(text: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {text}", flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(value: float, baseline: float) -> float | None:
    return value / baseline if baseline else None


class Suite:
    def __init__(self, args, runner: Runner, tmp: Path):
        self.args, self.runner, self.tmp = args, runner, tmp
        self.rows: list[Row] = []
        self.runs = 0

    # -- shared pieces --
    def data_flags(self, task: str) -> list[str]:
        """The data options of ``task`` for `repro run` and bare_loop.py alike."""
        args = self.args
        if task.startswith("lstm-"):
            return ["--data-dir", str(args.data_dir)]
        if "cifar10" in task:
            root = args.data_root
            if (root / "cifar10-jpeg.tar.gz").is_file() or (root / "train").is_dir():
                return ["--data-dir", str(root), "--set", "data_format=jpeg"]
            if (root / "cifar-10-batches-py").is_dir():
                return ["--data-dir", str(root)]
            return []  # REPRO_CIFAR10_DIR or the cache folder
        if "mnist" in task and args.fashion_mnist_dir:
            return ["--data-dir", str(args.fashion_mnist_dir)]
        return []

    def repro_run(self, task: str, machines: int, steps: int, extra: list[str], label: str, poll=None) -> dict:
        """One `repro run` into a fresh folder: wall seconds of the whole process, the last metrics row, config.
        ``extra`` may hold `--epochs 100000`: then --max-steps, not the recipe's epochs, ends the run (the quick
        recipes' schedules are constant, so the epoch count changes nothing else)."""
        self.runs += 1
        out = self.tmp / f"run{self.runs:03d}"
        cmd = [sys.executable, "-m", "repro", "run", task, "--preset", "quick", "--machines", str(machines),
               "--max-steps", str(steps), "--eval-batches", "1", "--run-opt", "quiet=true", "--out", str(out),
               *self.data_flags(task), *extra]
        seconds, _ = self.runner.run(cmd, label, poll=poll)
        (run_dir,) = [p.parent for p in out.glob(f"{task}/*/metrics.csv")]
        with open(run_dir / "metrics.csv") as f:
            last = list(csv.DictReader(f))[-1]
        config = json.loads((run_dir / "config.json").read_text())
        options = config["task"]["options"]
        per_batch = int(options["batch_size"]) * int(options.get("bptt", 1))  # tokens (LMs) or images
        grad_evals, wall = int(last["grad_evals"]), float(last["wall_seconds"])
        return {"process_s": seconds, "iteration": int(last["iteration"]), "grad_evals": grad_evals,
                "wall_seconds": wall, "samples": grad_evals * per_batch,
                "samples_per_s": grad_evals * per_batch / wall if wall > 0 else float("nan"),
                "optimizer": config["optimizer"]["name"], "sync": config["sync"]["name"]}

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    # -- sections --
    def overhead(self) -> None:
        a = self.args
        for task in a.tasks:
            repro, bare, bare_steady = [], [], []
            for r in range(a.repeats):
                order = ("repro", "bare") if r % 2 == 0 else ("bare", "repro")
                for side in order:
                    if side == "repro":
                        res = self.repro_run(task, 1, a.steps + 1, ["--sync", "none", *MANY_EPOCHS],
                                             f"overhead {task} repro")
                        if res["iteration"] != a.steps + 1:
                            raise Failed(f"repro ran {res['iteration']} steps of {task}, expected {a.steps + 1}")
                        repro.append(res["samples_per_s"])
                        say(f"overhead {task} #{r + 1}/{a.repeats}: repro {res['samples_per_s']:.1f} samples/s "
                            f"({res['iteration']} steps, {res['wall_seconds']:.2f} s training, {res['optimizer']})")
                    else:
                        cmd = [sys.executable, str(BENCH / "bare_loop.py"), task, "--steps", str(a.steps), "--json",
                               *self.data_flags(task)]
                        _, output = self.runner.run(cmd, f"overhead {task} bare")
                        res = json.loads(output.strip().splitlines()[-1])
                        bare.append(res["samples_per_s_with_warmup"])
                        bare_steady.append(res["samples_per_s"])
                        say(f"overhead {task} #{r + 1}/{a.repeats}: bare  {res['samples_per_s_with_warmup']:.1f} "
                            f"samples/s ({res['steps_with_warmup']} steps, {res['seconds_with_warmup']:.2f} s; "
                            f"{res['samples_per_s']:.1f} after the warm-up step)")
            unit = "tok/s" if task.startswith("lstm-") else "img/s"
            n = f"median of {len(repro)}, {a.steps + 1} steps from the first"
            self.add(Row("overhead", task, "repro samples/s", median(repro), unit, median(bare),
                         ratio(median(repro), median(bare)), ">= 0.98", n),
                     Row("overhead", task, "bare samples/s", median(bare), unit, note=n),
                     Row("overhead", task, "bare samples/s after warm-up", median(bare_steady), unit,
                         note=f"median of {len(bare_steady)}, {a.steps} steps after the first"))

    def startup(self) -> None:
        a = self.args
        configs = {"import torch": [sys.executable, "-c", "import torch"],
                   "import torch, torch._dynamo": [sys.executable, "-c", "import torch, torch._dynamo"],
                   "repro run, 1 worker": None, "repro run, 4 workers": None}
        times = defaultdict(list)
        for r in range(a.repeats):
            for name, cmd in configs.items():
                if cmd is None:
                    machines = 1 if "1 worker" in name else 4
                    res = self.repro_run("lstm-ptb", machines, 1, [], f"startup {machines} workers")
                    seconds = res["process_s"]
                else:
                    seconds, _ = self.runner.run(cmd, f"startup {name}")
                times[name].append(seconds)
                say(f"startup #{r + 1}/{a.repeats}: {name}: {seconds:.2f} s")
        torch_s, floor_s = median(times["import torch"]), median(times["import torch, torch._dynamo"])
        goals = {"repro run, 1 worker": "<= 2", "repro run, 4 workers": "<= 3"}
        note = f"median of {a.repeats}; repro: lstm-ptb quick, --max-steps 1 --eval-batches 1, whole process"
        for name in configs:
            value = median(times[name])
            self.add(Row("startup", name, "wall s / import torch", value, "s", torch_s, ratio(value, torch_s),
                         goals.get(name, ""), note))
        for name in goals:
            value = median(times[name])
            self.add(Row("startup", name, "wall s / import torch+_dynamo", value, "s", floor_s,
                         ratio(value, floor_s), note="the floor of any run that builds a torch optimizer"))

    def memory(self) -> None:
        a = self.args
        for task in a.memory_tasks:
            extra = ["--set", "train_subset=0"] if "cifar" in task else []
            base = None
            sets = [f for flag, value in zip(extra[::2], extra[1::2]) for f in (flag, value)]
            cmd = [sys.executable, str(BENCH / "bare_loop.py"), task, "--footprint", *self.data_flags(task), *sets]
            _, output = self.runner.run(cmd, f"memory {task} footprint")
            need = json.loads(output.strip().splitlines()[-1])  # one more worker's model + optimizer + activations
            self.add(Row("memory", task, "model + optimizer state + activations", need["total_mb"], "MB", note=(
                f"one step of bare_loop.py --footprint: params {need['params_mb']:.1f}, grads {need['grads_mb']:.1f}, "
                f"optimizer state {need['optimizer_state_mb']:.1f}, activations saved for backward "
                f"{need['activations_mb']:.1f} MB")))
            for workers in a.memory_workers:
                polled: list[TreeMemory] = []

                def poll(pid: int, polled=polled) -> None:
                    if not polled:
                        polled.append(TreeMemory(pid))
                    polled[0].sample()

                self.repro_run(task, workers, a.memory_steps, extra, f"memory {task} {workers} workers", poll=poll)
                s = polled[0].summary()
                base = base or s
                config = f"{task} N={workers}"
                say(f"memory {config}: per worker peak RSS {s['worker_peak_rss_mb_mean']:.0f} MB, PSS "
                    f"{s['worker_peak_pss_mb_mean']:.0f} MB; total PSS {s['total_peak_pss_mb']:.0f} MB, "
                    f"sum of peak RSS {s['total_sum_peak_rss_mb']:.0f} MB")
                note = (f"{s['workers']} workers, {s['processes']} processes in the tree, {s['polls']} polls, "
                        f"{a.memory_steps} steps" + (", full training set (train_subset=0)" if extra else ""))
                total = f"ratio: total(N={workers}) / total(N={a.memory_workers[0]})"
                for metric, key, compared, text in (
                        ("worker peak RSS (mean)", "worker_peak_rss_mb_mean", True, note),
                        ("worker peak RSS (max)", "worker_peak_rss_mb_max", False, ""),
                        ("worker peak PSS (mean)", "worker_peak_pss_mb_mean", True, ""),
                        ("worker peak PSS (max)", "worker_peak_pss_mb_max", False, ""),
                        ("other processes peak PSS", "others_peak_pss_mb", False,
                         "launcher, forkserver, helpers: the sum of their peaks"),
                        ("total peak PSS", "total_peak_pss_mb", True, f"{total}; the largest sum seen at one poll"),
                        ("total sum of peak RSS", "total_sum_peak_rss_mb", True,
                         f"{total}; shared pages counted once per process")):
                    self.add(Row("memory", config, metric, s[key], "MB", base[key] if compared else None,
                                 ratio(s[key], base[key]) if compared else None, note=text))
                if workers > a.memory_workers[0]:  # issue 12's goal: 1.5 x total(1 worker) + (N - 1) x footprint
                    bound = 1.5 * base["total_peak_pss_mb"] + (workers - a.memory_workers[0]) * need["total_mb"]
                    self.add(Row("memory", config, "total peak PSS / goal bound", s["total_peak_pss_mb"], "MB", bound,
                                 ratio(s["total_peak_pss_mb"], bound), "<= 1",
                                 f"bound = 1.5 x total(N={a.memory_workers[0]}) + {workers - a.memory_workers[0]} x "
                                 f"(model + optimizer state + activations) = {bound:.0f} MB"))

    def speedup(self) -> None:
        a = self.args
        rates, ceiling, one_thread = defaultdict(list), defaultdict(list), []
        for r in range(a.repeats):
            for workers in a.speedup_workers:
                res = self.repro_run("lstm-ptb", workers, a.speedup_steps, ["--sync", "none", *MANY_EPOCHS],
                                     f"speedup {workers} workers")
                rates[workers].append(workers * res["samples_per_s"])  # every worker's steps / the slowest's seconds
                ceiling[workers].append(self.bare_copies("lstm-ptb", workers, a.speedup_steps))
                say(f"speedup #{r + 1}/{a.repeats}: {workers} worker{'s' if workers > 1 else ''}: "
                    f"{rates[workers][-1]:.0f} tok/s in total; {workers} bare loop cop{'ies' if workers > 1 else 'y'}"
                    f": {ceiling[workers][-1]:.0f} tok/s")
            one_thread.append(self.bare_copies("lstm-ptb", 1, a.speedup_steps, threads=1))
            say(f"speedup #{r + 1}/{a.repeats}: 1 bare loop copy, 1 thread: {one_thread[-1]:.0f} tok/s")
        first = a.speedup_workers[0]
        base, bare_base = median(rates[first]), median(ceiling[first])
        for workers in a.speedup_workers:
            value, bare = median(rates[workers]), median(ceiling[workers])
            efficiency = ratio(value, base * workers / first) or 0.0
            paired = ", ".join(f"{n / d:.2f}" for n, d in zip(rates[workers], rates[first]))
            config = f"lstm-ptb N={workers}"
            self.add(Row("speedup", config, "aggregate samples/s", value, "tok/s", base,
                         ratio(value, base), ">= 1.1" if workers == 4 else "",
                         note=f"median of {len(rates[workers])}, {a.speedup_steps} steps per "
                         f"worker, --sync none; efficiency (ratio / workers) {efficiency:.2f}; "
                         f"each round's own ratio: {paired}"),
                     Row("speedup", config, "bare loop copies samples/s (ceiling)", bare, "tok/s", bare_base,
                         ratio(bare, bare_base), note=f"median of {len(ceiling[workers])}: {workers} independent "
                         f"bare_loop.py copies, {self.threads(workers)} thread(s) each, started together: their "
                         f"samples over the span from the first start to the last end"))
            speedup, most = ratio(value, base), ratio(bare, bare_base)
            if speedup is not None and most:
                self.add(Row("speedup", config, "repro speed-up / ceiling speed-up", speedup, "", most,
                             speedup / most, note="how much of what the machine allows N processes repro gets"))
        # No number of processes does more than every core at one thread's efficiency: cores x (1 copy, 1 thread).
        # Against 1 worker (all cores in one process) that bounds every speed-up above; where one process already
        # scales its threads well, the bound is near 1.
        cores, alone = self.threads(1), median(one_thread)
        self.add(Row("speedup", f"lstm-ptb {cores} cores", "cores x one-thread samples/s (bound)", cores * alone,
                     "tok/s", base, ratio(cores * alone, base),
                     note=f"median of {len(one_thread)}: 1 bare_loop.py copy, 1 thread, {alone:.0f} tok/s, times "
                     f"{cores} cores; 1 bare copy with {cores} threads runs {bare_base / alone:.2f}x its speed"))

    def gpu(self) -> None:
        _, found = self.runner.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                                   "gpu check")
        if found.strip().splitlines()[-1] != "True":
            self.add(Row("gpu", "", "not measured", "no CUDA device on this machine"))
            return
        table = self.tmp / "gpu.csv"
        self.runner.run([sys.executable, str(BENCH / "gpu.py"), "--data-root", str(self.args.data_root),
                         "--csv", str(table)], "gpu")
        number = lambda text: float(text) if text else None  # noqa: E731 - empty: unknown
        with open(table) as f:
            for row in csv.DictReader(f):
                config = f"{row['task']} {row['switch']}"
                self.add(Row("gpu", config, "steps/s", number(row["steps_per_s"]), "steps/s", note=row["device"]),
                         Row("gpu", config, "GPU memory (peak allocated)", number(row["gpu_memory_mb"]), "MB"),
                         Row("gpu", config, "achieved TFLOP/s / peak", number(row["achieved_tflops"]), "TFLOP/s",
                             number(row["peak_tflops"]), number(row["fraction_of_peak"]),
                             note=f"{row['gflops_per_step']} GFLOP per step (torch.utils.flop_counter)"))

    def threads(self, workers: int) -> int:
        budget = int(self.args.threads or os.cpu_count() or 1)
        return max(1, budget // workers)  # as repro divides a node's cores among its workers

    def bare_copies(self, task: str, copies: int, steps: int, threads: int | None = None) -> float:
        """Aggregate samples/s of ``copies`` bare loops started together, each with its share of the cores (or
        ``threads``)."""
        barrier = self.tmp / f"barrier{self.runs:03d}-{copies}"
        self.runs += 1
        cmd = [sys.executable, str(BENCH / "bare_loop.py"), task, "--steps", str(steps), "--json",
               "--copies", str(copies), "--barrier", str(barrier), *self.data_flags(task)]
        env = {**(self.runner.env or os.environ), "REPRO_THREADS": str(threads or self.threads(copies))}
        _, outputs = self.runner.run_together([cmd] * copies, f"speedup {copies} bare copies", env)
        return together_samples_per_s([json.loads(out.strip().splitlines()[-1]) for out in outputs])

    def buckets(self) -> None:
        a = self.args
        out = self.tmp / "buckets.csv"
        cmd = [sys.executable, str(BENCH / "every_step_buckets.py"), "--task", "lstm-ptb", "--data-dir",
               str(a.data_dir), "--machines", str(a.buckets_machines), "--steps", str(a.buckets_steps),
               "--repeats", str(max(a.repeats, 1)), "--csv", str(out)]
        say(f"buckets: every_step_buckets.py, {a.buckets_machines} workers, {a.buckets_steps} steps, "
            f"{a.repeats} repeats")
        self.runner.run(cmd, "buckets")
        rows = list(csv.DictReader(open(out)))
        flat = float(rows[0]["s_per_step"])
        for row in rows:
            self.add(Row("buckets", f"every-step {row['sync']}", "s/step", float(row["s_per_step"]), "s", flat,
                         float(row["flat_over_this"]), note=f"ratio: flat / this; lstm-ptb, {a.buckets_machines} "
                         f"workers, {a.buckets_steps} steps, median of {row['runs']}, {row['comm_rounds']} rounds"))

    def celgc(self) -> None:
        a = self.args
        out = self.tmp / "celgc.csv"
        cmd = [sys.executable, str(BENCH / "celgc_speed.py"), "--data-dir", str(a.data_dir), "--machines",
               str(a.celgc_machines), "--steps", str(a.celgc_steps), "--intervals", a.celgc_intervals,
               "--csv", str(out)]
        say(f"celgc: celgc_speed.py, {a.celgc_machines} workers, {a.celgc_steps} steps, I = {a.celgc_intervals}")
        self.runner.run(cmd, "celgc")
        rows = list(csv.DictReader(open(out)))
        every = float(rows[0]["s_per_step"])
        for row in rows:
            self.add(Row("celgc", row["sync"], "s/step", float(row["s_per_step"]), "s", every,
                         float(row["speedup_vs_every_step"]), note=f"ratio: every-step / this; lstm-ptb, "
                         f"{a.celgc_machines} workers, {a.celgc_steps} steps, {row['comm_rounds']} rounds"))


# -- machine facts, tables, CSV ----------------------------------------------------------------------------------------
def machine_facts() -> dict[str, str]:
    facts = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "platform": platform.platform(),
             "python": platform.python_version(), "cpu_count": str(os.cpu_count()),
             "cpus_usable": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "",
             "load_average_start": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        facts["mem_total_gb"] = f"{_kb_fields('/proc/meminfo', ('MemTotal',))['MemTotal'] / 1024 ** 2:.1f}"
    except (OSError, KeyError):
        pass
    for package in ("torch", "torchvision", "repro"):
        try:
            facts[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            facts[package] = "not installed"
    try:
        facts["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        facts["git_dirty"] = "yes" if dirty else "no"
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def _fmt(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_table(section: str, rows: list[Row]) -> None:
    import pandas as pd

    table = pd.DataFrame([{"config": r.config, "metric": r.metric, "value": _fmt(r.value), "unit": r.unit,
                           "baseline": _fmt(r.baseline), "ratio": _fmt(r.ratio), "goal": r.goal}
                          for r in rows if r.section == section])
    if table.empty:
        return
    print(f"\n== {section} ==", flush=True)
    print(table.to_string(index=False), flush=True)
    print(flush=True)


def write_csv(path: Path, facts: dict, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for key, value in facts.items():
            w.writerow(["machine", "", key, value, "", "", "", "", ""])
        for r in rows:
            w.writerow([r.section, r.config, r.metric, _csv(r.value), r.unit, _csv(r.baseline), _csv(r.ratio), r.goal,
                        r.note])
    os.replace(tmp, path)


def _csv(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# -- the command -------------------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated counts >= 1, got {text!r}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    shared = Path(os.environ.get("REPRO_SHARED_DATA", REPO.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="The sections are described at the top of benchmarks/suite.py.")
    p.add_argument("--quick", action="store_true", help="a few steps of everything, fewer workers: a smoke check")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--tasks", default=",".join(OVERHEAD_TASKS), help="the overhead section's tasks")
    p.add_argument("--memory-tasks", default=",".join(MEMORY_TASKS), help="the memory section's tasks")
    p.add_argument("--data-root", type=Path, default=shared,
                   help="folder with ptb/ and cifar10-jpeg.tar.gz (default $REPRO_SHARED_DATA or ../shared/data)")
    p.add_argument("--data-dir", type=Path, help="the PTB folder (default DATA_ROOT/ptb)")
    p.add_argument("--fashion-mnist-dir", type=Path, help="default: the task's own ($REPRO_FASHION_MNIST_DIR or "
                   "/usr/share/datasets/fashion-mnist)")
    for key, what in SIZE_HELP.items():
        kind = str if key.endswith(("workers", "intervals")) else int
        p.add_argument(f"--{key.replace('_', '-')}", type=kind, default=None,
                       help=f"{what} (default {FULL[key]}; --quick: {QUICK[key]})")
    p.add_argument("--threads", type=int, help="the core budget of every run (REPRO_THREADS: repro shares it among "
                   "its workers, the bare loop uses it); default: all cores")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per subprocess")
    p.add_argument("--csv", type=Path, default=BENCH / "results" / "suite.csv", help="where the table goes")
    p.add_argument("--keep-logs", action="store_true", help="keep the subprocesses' logs and run folders (printed)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.memory_workers = _int_list(str(args.memory_workers))
    args.speedup_workers = _int_list(str(args.speedup_workers))
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.memory_tasks = [t.strip() for t in args.memory_tasks.split(",") if t.strip()]
    if args.data_dir is None:
        args.data_dir = args.data_root / "ptb"
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM/SIGHUP: unwind through the clean-up like Ctrl-C


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    facts = machine_facts()
    facts["sizes"] = json.dumps({k: getattr(args, k) for k in FULL}) + (" (--quick)" if args.quick else "")
    tmp = Path(tempfile.mkdtemp(prefix="repro-suite-"))
    env = {**os.environ, "REPRO_THREADS": str(args.threads)} if args.threads else None
    if args.threads:
        facts["REPRO_THREADS"] = str(args.threads)
    runner = Runner(tmp, args.timeout, env)
    suite = Suite(args, runner, tmp)
    say(f"suite: sections {', '.join(args.sections)}{' (quick)' if args.quick else ''}; {facts['cpu_count']} CPUs, "
        f"load {facts['load_average_start']}, torch {facts.get('torch')}; logs in {tmp}")
    code = 0
    try:
        for section in args.sections:
            say(f"-- {section}")
            started = time.perf_counter()
            try:
                getattr(suite, section)()
            except Failed as e:
                code = 1
                say(f"{section} failed: {e}")
                suite.add(Row(section, "", "failed", str(e).splitlines()[0]))
            print_table(section, suite.rows)
            say(f"{section} took {time.perf_counter() - started:.0f} s")
            facts["load_average_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
            write_csv(args.csv, facts, suite.rows)
    except KeyboardInterrupt:
        stopped = runner.stop_all()
        facts["interrupted"] = "yes"
        write_csv(args.csv, facts, suite.rows)
        say(f"interrupted: {stopped} running measurement(s) stopped; the finished sections are in {args.csv}")
        code = 130
    finally:
        if args.keep_logs or code == 1:
            say(f"logs and run folders kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if code != 130:
        say(f"wrote {args.csv}")
    return code


if __name__ == "__main__":
    sys.exit(main())
