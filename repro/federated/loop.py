"""A federated run in a worker process: what `repro run --strategy NAME` runs instead of the trainer's loop.

The run's sections give: the task (model, data; its ``batch_size`` is the clients' B), the optimizer (each client's
local optimizer, rebuilt for every local work), the strategy (``--strategy fedbuff --strategy-opt c=5``) with its
section's fields ``clients`` (M), ``spread`` (client times τ_i = 1 − i·spread/(M − 1)), ``local_steps`` (K),
``horizon`` (emulated time to run) and ``eval_every`` (emulated time between rows), and the partition of the
training set over the M clients (the ``partition`` section when the run has one, else iid). Client importances p_i
are uniform (the authors' ``P_type uniform``, used in all their experiments). No step-size schedule: the clients'
step size is the optimizer's ``lr`` throughout.

One row per ``eval_every`` of emulated time (and one for the initial model): the driver's counters (emulated time,
aggregations, staleness, participation, both byte ledgers), the federated training loss Σ p_i f_i(θ) and the task's
test metrics of the server model. A checkpoint after every row holds the clock, the server model and the counters.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.distributed as dist

from repro import checkpoint, optim, partition
from repro.context import RunContext
from repro.errors import UsageError
from repro.federated import client_times, make
from repro.federated.driver import FederatedDriver, training_labels
from repro.federated.strategies import exact

DRIVER_COLUMNS = ("emulated_time", "aggregations", "contributions", "staleness_mean", "staleness_max",
                  "participation_min", "participation_max", "process_bytes", "emulated_bytes_down", "emulated_bytes_up")
NOT_FEDERATED = "none"


@dataclass(frozen=True)
class Clients:
    """The strategy section's fields: the emulated clients and how long to run them."""
    clients: int = 10
    spread: float = 0.0
    local_steps: int = 10
    horizon: float = 100.0
    eval_every: float = 10.0

    def check(self, world: int | None = None) -> None:
        """One-line errors for values no federated run can use (the launcher calls it before any worker starts)."""
        if isinstance(self.clients, bool) or not isinstance(self.clients, int) or self.clients < 1:
            raise UsageError(f"clients must be an integer >= 1, got {self.clients!r}")
        client_times(self.clients, self.spread)  # the spread's own check
        if isinstance(self.local_steps, bool) or not isinstance(self.local_steps, int) or self.local_steps < 1:
            raise UsageError(f"local_steps must be an integer >= 1, got {self.local_steps!r}")
        for name in ("horizon", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise UsageError(f"{name} (emulated time) must be a number > 0, got {value!r}")
        if world is not None and world > self.clients:
            raise UsageError(f"{world} worker processes for {self.clients} clients: use at most one process per client")

    def checkpoints(self) -> list[Fraction]:
        """The emulated times of the rows after the first: every eval_every, and the horizon."""
        horizon, every = exact(self.horizon, "horizon"), exact(self.eval_every, "eval_every")
        times = [every * k for k in range(1, math.ceil(horizon / every))]
        return times + [horizon]


def clients_of(section: dict) -> Clients:
    return Clients(**{k: section[k] for k in Clients.__dataclass_fields__ if k in section})


def check(strategy: dict, world: int, partition_section: dict | None = None) -> None:
    """The launcher's checks of a federated run (before any worker starts): the clients, the strategy's settings
    with them (FedBuff's c against M, FedFix's Δt), the partition's options."""
    clients = clients_of(strategy)
    clients.check(world)
    make(strategy["name"], **strategy.get("options", {})).bind(client_times(clients.clients, clients.spread),
                                                              horizon=clients.horizon)
    if partition_section:
        partition.validate(partition_section["name"], **partition_section.get("options", {}))


def check_section(name: str, options: dict, fields: dict, config) -> None:
    """The component table's check of the strategy section (``repro run`` calls it before any worker starts)."""
    if name == NOT_FEDERATED:
        return
    partition_section = getattr(config, "partition", None)
    if partition_section is not None and not isinstance(partition_section, dict):
        partition_section = {"name": partition_section.name, "options": dict(partition_section.options)}
    check({"name": name, "options": options, **fields}, world=config.train.machines,
          partition_section=partition_section)


def columns(task) -> list[str]:
    return ["epoch", *DRIVER_COLUMNS, "train_loss", *_test_columns(task), "wall_seconds", "status"]


def _test_splits(task) -> list[str]:
    return [s for s in task.final_splits if s not in ("train", "trainset")]


def _test_columns(task) -> list[str]:
    splits = _test_splits(task)
    return [c for c in task.metric_columns if any(c.startswith(f"{s}_") for s in splits)]


def build_driver(spec: dict, task, context: RunContext) -> FederatedDriver:
    section = spec["strategy"]
    clients = clients_of(section)
    clients.check(context.world)
    tau = client_times(clients.clients, clients.spread)
    strategy = make(section["name"], **section.get("options", {})).bind(tau, horizon=clients.horizon)
    split = spec.get("partition") or {"name": "iid", "options": {}}
    shards = partition.split(split["name"], training_labels(task), clients.clients, context.seed,
                             **split.get("options", {}))
    batch_size = getattr(getattr(task, "opts", None), "batch_size", 64)
    name, hparams = spec["optimizer"]["name"], spec["optimizer"]["hparams"]
    return FederatedDriver(task, strategy, [torch.tensor(s, dtype=torch.int64) for s in shards],
                           lambda params: optim.make(name, params, **hparams), clients.local_steps, batch_size,
                           seed=context.seed, context=context)


class FederatedLoop:
    """Rows, checkpoints and the stop agreement around a driver (every rank runs it)."""

    def __init__(self, driver: FederatedDriver, task, clients: Clients, context: RunContext, sink=None,
                 quiet: bool = True):
        self.driver, self.task, self.clients, self.context = driver, task, clients, context
        self.sink, self.quiet = sink, quiet
        self.rows = 0  # rows written (the initial model's included)
        self.wall = 0.0  # training seconds before this process started (resumed runs)
        self.last_row: dict = {}  # the newest row: a resume that finds no interval left still returns it

    def row(self, status: str = "", at: Fraction | None = None) -> dict:
        """Log the server model at emulated time ``at`` (default: the clock's, i.e. the last aggregation's)."""
        model = self.driver.server_model()
        values = {"epoch": self.rows, **self.driver.metrics(), "train_loss": self.driver.federated_loss()}
        if at is not None:
            values["emulated_time"] = float(at)
        model.eval()
        with torch.no_grad():
            for split in _test_splits(self.task):
                sums = self.task.eval_sums(split).to(device=self.context.device, dtype=torch.float64)
                if self.context.distributed:
                    dist.all_reduce(sums, group=self.context.world_group)
                values.update(self.task.eval_metrics(split, sums.cpu()))
        model.train()
        values = {k: v for k, v in values.items() if k in self._columns}
        values["wall_seconds"] = self.wall
        if status:
            values["status"] = status
        if self.sink is not None:
            self.sink.write(values)
        self.rows += 1
        if not self.quiet:
            print(f"t={values['emulated_time']:.4g} aggregations {values['aggregations']} "
                  f"loss {values['train_loss']:.4f}", file=sys.stderr)
        return values

    @property
    def _columns(self) -> list[str]:
        return columns(self.task)

    def _agree(self, stop) -> bool:
        flag = torch.tensor([1.0 if (stop is not None and stop()) else 0.0], device=self.context.device)
        if self.context.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.context.world_group)
        return bool(flag.item())

    def run(self, should_stop=None, on_row=None) -> dict:
        """From the current state to the horizon; ``on_row(loop, stopped)`` after each row (a checkpoint)."""
        last = self.row() if self.rows == 0 else self.last_row
        stopped = False
        for k, until in enumerate(self.clients.checkpoints(), start=1):
            if k < self.rows:
                continue  # rows a resumed run has written already
            started = time.perf_counter()
            while self.driver.strategy.peek()[0] <= until:
                self.driver.aggregate_next()
                if self._agree(should_stop):
                    stopped = True
                    break
            self.wall += time.perf_counter() - started
            final = k == len(self.clients.checkpoints()) and not stopped
            last = self.row("finished" if final else ("interrupted" if stopped else ""),
                            at=None if stopped else until)
            self.last_row = last
            if stopped:
                # Stopped inside interval k: the resumed run finishes it and writes its row again (the checkpoint
                # counts the rows before this one, so resuming drops this one from metrics.csv).
                self.rows -= 1
            if on_row is not None:
                on_row(self, stopped)
            if stopped:  # the launcher's message: "at step <aggregations> in epoch <the interval stopped in>"
                return {**last, "status": "interrupted", "epochs_done": self.rows - 1,
                        "step": self.driver.totals.aggregations}
        return {**last, "status": "finished"}

    def state_dict(self) -> dict:
        return {"driver": self.driver.state_dict(), "rows": self.rows, "wall": self.wall,
                "last_row": json.loads(json.dumps(self.last_row, default=str))}  # plain values: weights_only loads

    def load_state_dict(self, state: dict) -> None:
        self.driver.load_state_dict(state["driver"])
        self.rows, self.wall = int(state["rows"]), float(state["wall"])
        self.last_row = dict(state.get("last_row", {}))


def run_federated(spec: dict, task, context: RunContext, stop, save_states, shards) -> dict:
    """The worker's federated run: build, resume if asked, loop, checkpoint after each row."""
    from repro.runlog import MetricsCSV, write_json

    driver = build_driver(spec, task, context)
    clients = clients_of(spec["strategy"])
    run_dir = Path(spec["run_dir"]) if context.rank == 0 and spec.get("run_dir") else None
    sink = MetricsCSV(run_dir / "metrics.csv", columns(task)) if run_dir is not None else None
    loop = FederatedLoop(driver, task, clients, context, sink, quiet=bool(spec.get("quiet")) or context.rank != 0)
    if spec.get("resume_from"):
        resume_from = Path(spec["resume_from"])
        payload = checkpoint.load(resume_from, identity=spec.get("identity"), world_size=context.world)
        loop.load_state_dict(checkpoint.rank_state(resume_from, payload, context.rank)["federated"])

    def save(loop: FederatedLoop, inside_interval: bool) -> None:
        """After row k: checkpoint "epoch" k; inside an interval (a stop): a step checkpoint numbered by the
        aggregations made."""
        identity = spec.get("identity") or ""
        epoch = loop.rows - 1
        step = loop.driver.totals.aggregations if inside_interval else None

        def write(states):
            if run_dir is None:
                return None
            return checkpoint.save(run_dir, epoch, identity, states, keep=int(spec.get("keep_checkpoints", 1)),
                                   step=step, extra={"csv_rows": loop.rows})

        save_states({"federated": loop.state_dict()}, context.rank, context.world, shards, epoch, step, identity,
                    write)

    try:
        last = loop.run(should_stop=stop, on_row=save if spec.get("checkpoints", True) else None)
    finally:
        if sink is not None:
            sink.close()
    if run_dir is not None and last.get("status") == "finished":
        write_json(run_dir / "summary.json", {**last, "participation": driver.totals.participation})
    return last
