"""Worker functions for the gossip and robust-aggregation tests (importable by spawned children)."""
from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist

import dist_helpers
from repro.worker import leave_process_group


def _dump(out_dir: str, rank: int, data: dict) -> None:
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump(data, f)


def _gathered(flat: torch.Tensor, world: int) -> torch.Tensor:
    table = torch.empty(world, flat.numel(), dtype=flat.dtype)
    dist.all_gather(list(table.unbind(0)), flat.contiguous())
    return table


def train_steps(model, opt, policy, rank: int, steps: int) -> None:
    """``steps`` regression steps on this rank's own random data, with the policy's hooks around each."""
    gen = torch.Generator().manual_seed(100 + rank)  # each worker its own data
    for _ in range(steps):
        x, y = torch.randn(8, 3, generator=gen), torch.randn(8, 2, generator=gen)
        policy.before_step(model)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        policy.after_step(model)


def _context(rank: int, world: int, roles=None):
    from repro.context import RunContext

    return RunContext.build(rank, world, "cpu", 5, roles)


def _plain_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # no BatchNorm: with lr = 0 a forward pass changes nothing
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def gossip_mixes_with_w(rank, world, store_file, out_dir, cases, steps):
    """For each (topology, order): lr = 0, ``steps`` steps of gossip; each step every rank's new model must be
    sum_j W_ij x_j(t)."""
    from repro import optim, sync, topology as topologies
    from repro.sync.gossip import flatten

    dist_helpers.init(rank, world, store_file)
    out = {}
    for topology, order in cases:
        model = _plain_model(rank)  # every rank different weights
        policy = sync.make("gossip", context=_context(rank, world), topology=topology, order=order)
        model = policy.wrap(model)
        opt = optim.make("sgd", model.parameters(), lr=0.0)
        errors, mean_moves = [], []
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(rank))
        for step in range(steps):
            before = _gathered(flatten(model).double(), world)
            policy.before_step(model)

            def closure():
                opt.zero_grad()
                loss = model(x).pow(2).mean()
                loss.backward()
                return loss

            opt.step(closure)
            policy.after_step(model)
            expected = topologies.matrix(topology, world, step) @ before
            after = _gathered(flatten(model).double(), world)
            errors.append(float((after - expected).abs().max()))
            mean_moves.append(float((after.mean(dim=0) - before.mean(dim=0)).abs().max()))
        consensus = policy.epoch_metrics(model, None)["consensus_distance"]
        expected_consensus = float(((after - after.mean(dim=0)) ** 2).sum(dim=1).mean().sqrt())
        out[f"{topology}-{order}"] = {
            "errors": errors, "mean_moves": mean_moves, "numel": flatten(model).numel(),
            "consensus": [consensus, expected_consensus],
            "degree": [len(topologies.peers(topology, world, rank, s)) for s in range(steps)],
            "ledger": policy.ledger.state_dict()}
    _dump(out_dir, rank, out)
    leave_process_group(finished=True)


def complete_atc_against_averaging(rank, world, store_file, out_dir, steps):
    """The same data and start: gossip on the complete graph with atc, and SGD followed by a model average."""
    from repro import optim, sync
    from repro.sync.gossip import flatten

    dist_helpers.init(rank, world, store_file)
    finals = {}
    for name, options in (("gossip", {"topology": "complete", "order": "atc"}), ("periodic", {"interval": 1})):
        model = dist_helpers.tiny_model(0)
        policy = sync.make(name, context=_context(rank, world), **options)
        model = policy.wrap(model)
        opt = optim.make("sgd", model.parameters(), lr=0.1, momentum=0.9)
        train_steps(model, opt, policy, rank, steps)
        finals[name] = flatten(model).tolist()
    _dump(out_dir, rank, finals)
    leave_process_group(finished=True)


def robust_exchange(rank, world, store_file, out_dir, behaviour, options, count, aggregator, f, steps):
    """``steps`` robust-aggregation steps with the last ``count`` ranks faulty; every rank records the faulty rows
    it forged and the honest models."""
    from repro import byzantine, optim
    from repro.context import FAULTY_ROLE
    from repro.sync import SYNC_POLICIES
    from repro.sync.gossip import flatten

    dist_helpers.init(rank, world, store_file)
    faults = byzantine.fault_model({"name": behaviour, "options": options, "count": count}, world)
    context = _context(rank, world, {r: FAULTY_ROLE for r in faults.ranks})
    model = dist_helpers.tiny_model(rank)
    policy = SYNC_POLICIES.get("robust")(aggregator=aggregator, f=f, context=context, faults=faults)
    model = policy.wrap(model)
    opt = optim.make("monna", model.parameters(), lr=0.05, beta=0.9)
    forged_rows = []
    original = policy.exchanged_rows

    def recording(table):
        rows = original(table)
        forged_rows.append(torch.stack([rows[r] for r in faults.ranks if r in rows]).reshape(-1).tolist()
                           if any(r in rows for r in faults.ranks) else [])
        return rows

    policy.exchanged_rows = recording
    train_steps(model, opt, policy, rank, steps)
    _dump(out_dir, rank, {"forged": forged_rows, "model": flatten(model).tolist(), "numel": flatten(model).numel(),
                          "ledger": policy.ledger.state_dict(), "mask": policy.mask()})
    leave_process_group(finished=True)


def trainer_with_faults(rank, world, store_file, out_dir, behaviour, count, aggregator, f, epochs):
    """A whole Trainer run of the toy task with the robust policy and faulty ranks: its metrics rows."""
    import trainer_helpers
    from repro import byzantine, callbacks, optim, schedules
    from repro.config import TrainSettings
    from repro.context import FAULTY_ROLE
    from repro.sync import SYNC_POLICIES, broadcast_model
    from repro.trainer import Trainer
    from repro.worker import seed_everything

    dist_helpers.init(rank, world, store_file)
    settings = TrainSettings(epochs=epochs, seed=3, machines=world)
    faults = byzantine.fault_model({"name": behaviour, "options": {}, "count": count}, world)
    context = _context(rank, world, {r: FAULTY_ROLE for r in faults.ranks})
    seed_everything(context.seed)
    task = trainer_helpers.ToyRegression(None, rank, world)
    broadcast_model(task.model)
    seed_everything(context.rank_seed)
    optimizer = optim.make("monna", task.model.parameters(), lr=0.05, beta=0.9)
    policy = SYNC_POLICIES.get("robust")(aggregator=aggregator, f=f, context=context, faults=faults)
    rows = trainer_helpers.Rows()
    trainer = Trainer(task, optimizer, policy, schedules.make("constant", epochs), settings, rows,
                      trainer_helpers.NullProgress(), context, callbacks.from_settings(settings, with_stats=False))
    trainer.run()
    finite = all(bool(torch.isfinite(p).all()) for p in task.model.parameters())
    _dump(out_dir, rank, {"rows": rows.rows, "finite": finite})
    leave_process_group(finished=True)
