"""A tiny task and worker functions for the Trainer state / evaluation tests (importable by spawned children)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from repro.worker import leave_process_group

from repro.task import Batch, Task

BATCHES_PER_EPOCH, BATCH = 5, 8  # odd: a two-gradient optimizer reads past every other epoch end


@dataclass
class ToyOptions:
    pass


class ToyRegression(Task):
    """Regression with BatchNorm (float buffers), dropout (the global RNG), random noise added to the inputs when
    a batch is drawn (augmentation from the global RNG), a value carried from batch to batch (like an LSTM's
    hidden state: ``state_dict``) and a validation target away from the training one (the validation loss first
    falls, then rises: NT-ASGD triggers). The batch order follows the epoch only; every worker its own data."""

    Options = ToyOptions
    metric_columns = ("val_loss",)
    eval_splits = final_splits = ("val",)

    def __init__(self, options=None, rank: int = 0, world_size: int = 1, device=torch.device("cpu")):
        self.rank, self.world = rank, world_size
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                         torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
        self.samples_per_epoch = BATCHES_PER_EPOCH * BATCH * world_size
        self.w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        gen = torch.Generator().manual_seed(7 + rank)
        self.val_x = torch.randn(32, 4, generator=gen)
        self.val_y = self.val_x @ (0.4 * self.w)
        self.carry = torch.zeros(())

    def train_batches(self, epoch):
        gen = torch.Generator().manual_seed(1000 * epoch + self.rank)
        self.carry = torch.zeros(())
        for _ in range(BATCHES_PER_EPOCH):
            x = torch.randn(BATCH, 4, generator=gen)
            x = x + 0.05 * torch.randn_like(x)  # augmentation: the global RNG, at the time the batch is drawn
            yield Batch((x, x @ self.w), samples=BATCH)

    def training_loss(self, batch):
        x, y = batch.data
        loss = torch.nn.functional.mse_loss(self.model(x).squeeze(1) + 0.1 * self.carry, y.squeeze(1))
        self.carry = 0.5 * self.carry + loss.detach()
        return loss, loss

    def eval_sums(self, split):
        pred = self.model(self.val_x)
        return torch.tensor([float(((pred - self.val_y) ** 2).sum()), float(self.val_y.numel())], dtype=torch.float64)

    def eval_metrics(self, split, sums):
        return {"val_loss": float(sums[0] / sums[1])}

    def state_dict(self):
        return {"carry": self.carry}

    def load_state_dict(self, state):
        self.carry = state["carry"].clone()


class Rows:
    def __init__(self):
        self.rows = []

    def write(self, row):
        self.rows.append(dict(row))


class NullProgress:
    def start_epoch(self, epoch, total): pass
    def advance(self, samples, text): pass
    def end_epoch(self, row): pass
    def close(self): pass


def build(spec: dict, rank: int, world: int, rows: Rows | None = None, policy=None):
    """A Trainer from a run-spec-shaped dict, as repro/worker.py builds one (seeded alike, rank 0's weights);
    ``spec["roles"]``: ``{rank: role}`` for the run context; ``policy(context)``: a policy instead of the spec's."""
    from repro import callbacks, optim, schedules, sync
    from repro.config import TrainSettings
    from repro.context import RunContext
    from repro.trainer import Trainer
    from repro.worker import seed_everything

    settings = TrainSettings(**spec["train"])
    settings.validate()
    context = RunContext.build(rank, world, "cpu", settings.seed, spec.get("roles"))
    seed_everything(context.seed)
    task = ToyRegression(None, rank, world)
    sync.broadcast_model(task.model)
    seed_everything(context.rank_seed)
    optimizer = optim.make(spec["optimizer"]["name"], task.model.parameters(), **spec["optimizer"]["hparams"])
    policy = policy(context) if policy else sync.make(spec["sync"]["name"], context=context, **spec["sync"]["options"])
    schedule = schedules.make(spec["schedule"]["name"], settings.epochs, **spec["schedule"]["options"])
    return Trainer(task, optimizer, policy, schedule, settings, rows, NullProgress(), context,
                   callbacks.from_settings(settings, with_stats=True))


def _stats(trainer) -> dict:
    from repro.callbacks import GradientUpdateStats

    for cb in trainer.callbacks:
        if isinstance(cb, GradientUpdateStats):
            return {"grad": cb.stats.grad.tolist(), "update": cb.stats.update.tolist(), "steps": cb.stats.steps.tolist(),
                    "first": [cb.stats.first_grad.tolist(), cb.stats.first_update.tolist()]}
    return {}


def _init(rank: int, world: int, store_file: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)


def whole_then_first_part(rank, world, store_file, out_dir, spec, stop_after):
    """The uninterrupted run, then (fresh components) a run stopped after epoch ``stop_after`` whose state is
    saved at that epoch end, as a checkpoint would be; ``stop_after = ("step", k)``: stopped after global step k
    (mid-epoch), the state saved there, as on SIGTERM."""
    import repro.trainer

    mid_epoch = isinstance(stop_after, (list, tuple))
    if mid_epoch:
        repro.trainer.STOP_CHECK_EVERY = 1  # agree on the stop after every step
    _init(rank, world, store_file)
    rows = Rows()
    trainer = build(spec, rank, world, rows)
    last = trainer.run()
    whole = {"rows": rows.rows, "last": last, "stats": _stats(trainer)}

    rows = Rows()
    trainer = build(spec, rank, world, rows)
    saved = {}

    def on_epoch_end(t, row):
        saved["state"] = t.state_dict()

    if mid_epoch:
        # Workers act on a request one check after it is made (a check after every step here): asked after
        # step k - 1, they stop after step k.
        result = trainer.run(should_stop=lambda: trainer.counts["iteration"] >= stop_after[1] - 1,
                             on_checkpoint=lambda t: on_epoch_end(t, None))
    else:
        result = trainer.run(should_stop=lambda: trainer.epoch >= stop_after, on_epoch_end=on_epoch_end)
    torch.save(saved["state"], os.path.join(out_dir, f"state{rank}.pt"))
    with open(os.path.join(out_dir, f"first{rank}.json"), "w") as f:
        json.dump({"whole": whole, "rows": rows.rows, "result": result}, f)
    leave_process_group(finished=True)


def resume(rank, world, store_file, out_dir, spec):
    """A fresh process: fresh components (the RNG seeded otherwise), the saved state loaded, the rest run."""
    _init(rank, world, store_file)
    rows = Rows()
    trainer = build(spec, rank, world, rows)
    torch.manual_seed(12345 + rank)  # whatever the process drew so far, the state decides
    state = torch.load(os.path.join(out_dir, f"state{rank}.pt"), weights_only=True)
    trainer.load_state_dict(state)
    last = trainer.run()
    with open(os.path.join(out_dir, f"rest{rank}.json"), "w") as f:
        json.dump({"rows": rows.rows, "last": last, "stats": _stats(trainer)}, f)
    leave_process_group(finished=True)


def eval_model_worker(rank, world, store_file, out_dir, policy_name, options):
    """What each policy gives evaluation, after two local steps that differ per worker."""
    from repro import sync

    _init(rank, world, store_file)
    torch.manual_seed(rank)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    sync.broadcast_model(model)
    policy = sync.make(policy_name, **options)
    for _ in range(2):
        with torch.no_grad():  # a "local step": parameters move alike (every-step keeps them equal), buffers not
            for p in model.parameters():
                p.add_(0.01 if policy_name == "every-step" else 0.01 * (rank + 1))
            for b in sync.float_buffers(model):
                b.add_(0.1 * (rank + 1))
        policy.after_step(model)
    before = [t.detach().clone() for t in sync.float_state(model)]
    state_before = policy.state_dict()
    evaluated = policy.eval_model(model)
    again = policy.eval_model(model)
    flat = torch.cat([t.detach().reshape(-1) for t in sync.float_state(evaluated)])
    mean = torch.cat([t.detach().reshape(-1) for t in sync.float_state(model)]).clone()
    dist.all_reduce(mean)
    mean /= world
    out = {
        "same_object": evaluated is model,
        "copy_reused": evaluated is again,
        "training_untouched": all(torch.equal(a, b) for a, b in zip(before, sync.float_state(model))),
        "is_mean": bool(torch.allclose(flat, mean, atol=1e-6)),
        "state_before": state_before,
        "state_after": policy.state_dict(),
        "numel": sum(t.numel() for t in sync.float_state(model)),
        "buffer_numel": sum(b.numel() for b in sync.float_buffers(model)),
    }
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump(out, f)
    leave_process_group(finished=True)


def poisoned_average_worker(rank, world, store_file, out_dir, spec):
    """Rank 1 sets a parameter the loss never reads to inf: the training loss stays finite, the model average does
    not; every worker must log ``diverged``."""
    from repro.callbacks import Callback

    class Poison(Callback):
        def after_step(self, model, epoch):
            if rank == 1:
                with torch.no_grad():
                    model.unused.fill_(float("inf"))

    _init(rank, world, store_file)
    rows = Rows()
    trainer = build(spec, rank, world, rows)
    trainer.model.unused = torch.nn.Parameter(torch.zeros(3))
    trainer.optimizer.add_param_group({"params": [trainer.model.unused]})
    trainer.callbacks.append(Poison())
    last = trainer.run()
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"rows": rows.rows, "last": last}, f)
    leave_process_group(finished=True)


def flat_and_bucketed(rank, world, store_file, out_dir, spec):
    """The same run under every-step's flat all-reduce and under DDP's bucketed one: final state, rows, counters."""
    _init(rank, world, store_file)
    out = {}
    for bucketed in (False, True):
        spec = {**spec, "sync": {"name": "every-step", "options": {"bucketed": bucketed}}}
        rows = Rows()
        trainer = build(spec, rank, world, rows)
        wrapped = type(trainer.task.model).__name__
        trainer.run()
        state = {k: v.tolist() for k, v in trainer.model.state_dict().items()}
        out[str(bucketed)] = {"state": state, "rows": rows.rows, "wrapped": wrapped,
                              "numel": sum(p.numel() for p in trainer.model.parameters())}
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump(out, f)
    leave_process_group(finished=True)


def slow_second_worker(rank, world, store_file, out_dir, spec, pause_s):
    """One epoch with --sync none in which rank 1 pauses ``pause_s`` before every step; rank 0 saves its rows."""
    import time

    from repro.callbacks import Callback

    class Pause(Callback):
        def before_step(self, model, epoch):
            time.sleep(pause_s)

    _init(rank, world, store_file)
    rows = Rows()
    trainer = build(spec, rank, world, rows)
    if rank == 1:
        trainer.callbacks.append(Pause())
    trainer.run()
    if rank == 0:
        with open(os.path.join(out_dir, "rows.json"), "w") as f:
            json.dump(rows.rows, f)
    leave_process_group(finished=True)


def masks_and_ledgers(rank, world, store_file, out_dir, spec):
    """With the last rank ``faulty`` (masked by the default mask): its parameters set to NaN after every step, or
    left healthy, or set to NaN while it is not masked; under ``none`` (each rank scores its own model) and under the
    base policy (scores the counted ranks' mean). Then a policy double that books different bytes on each rank, with
    roles server / honest / faulty; then periodic averaging's ring bytes. Rank 0 saves every run's rows."""
    from repro.callbacks import Callback
    from repro.sync import SyncPolicy, float_state

    faulty = world - 1

    class Poison(Callback):
        def after_step(self, model, epoch):
            if rank == faulty:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float("nan"))

    class Booking(SyncPolicy):
        averages_for_evaluation = False

        def after_step(self, model):
            self.book(payload=10 * (self.context.rank + 1), sent=100 * (self.context.rank + 1), received=7)

    _init(rank, world, store_file)
    out = {}
    for policy_name, policy in (("none", None), ("average", SyncPolicy)):
        for case, poisoned, roles in (("poisoned, masked", True, {faulty: "faulty"}),
                                      ("healthy, masked", False, {faulty: "faulty"}),
                                      ("poisoned, counted", True, None)):
            rows = Rows()
            trainer = build({**spec, "roles": roles}, rank, world, rows, policy=policy)
            if poisoned:
                trainer.callbacks.append(Poison())
            trainer.run()
            out[f"{policy_name}: {case}"] = rows.rows
    rows = Rows()
    trainer = build({**spec, "roles": {0: "server", faulty: "faulty"}}, rank, world, rows, policy=Booking)
    trainer.run()
    out["booking"], out["booking columns"] = rows.rows, trainer.columns
    rows = Rows()
    trainer = build({**spec, "sync": {"name": "periodic", "options": {"interval": BATCHES_PER_EPOCH}}}, rank, world,
                    rows)
    trainer.run()
    out["periodic"] = rows.rows
    out["periodic payload"] = sum(t.numel() * t.element_size() for t in float_state(trainer.model))
    if rank == 0:
        with open(os.path.join(out_dir, "masks.json"), "w") as f:
            json.dump(out, f)
    leave_process_group(finished=True)
