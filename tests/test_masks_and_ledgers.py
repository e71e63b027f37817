"""The run context, the sync policies' byte ledgers and masks, and the columns components declare: the maths in
this process, the reductions in real gloo process groups (3 workers)."""
import csv
import json
import math

import pytest
import torch

import dist_helpers
import trainer_helpers
from trainer_helpers import NullProgress, Rows, ToyRegression


# -- the run context ------------------------------------------------------------------------------------------------

def test_run_context_roles_and_the_builders_that_ask_for_it():
    from repro import sync
    from repro.context import RunContext, call_with_context
    from repro.registry import builder_defaults

    context = RunContext.build(1, 4, "cpu", 5, {3: "faulty", 0: "server"})
    assert context.roles == ("server", "honest", "honest", "faulty") and context.role == "honest"
    assert context.ranks("honest") == [1, 2] and context.role_names == ["server", "honest", "faulty"]
    assert context.rank_seed == 5 + 1000
    assert "context" not in builder_defaults(sync.SYNC_POLICIES.get("periodic"))  # not a setting, not a flag
    policy = sync.make("periodic", context=context, interval=2)
    assert policy.context is context and policy.mask() == [True, True, True, False]
    assert call_with_context(lambda a: a, context, a=1) == 1  # a builder that does not ask gets no context
    plan = RunContext.plan(8)
    assert plan.world == 8 and plan.planning and not plan.distributed
    with pytest.raises(RuntimeError):
        plan.group("gossip")
    with pytest.raises(ValueError):
        RunContext.build(4, 4, "cpu", 0)


def test_role_assigners_agree_or_refuse_with_one_line():
    from repro import context as ctx
    from repro.errors import UsageError

    before = list(ctx._ROLE_ASSIGNERS)
    try:
        ctx.assigns_roles(lambda spec, world: {world - spec["faulty"] + i: "faulty" for i in range(spec["faulty"])})
        assert ctx.assign_roles({"faulty": 2}, 5) == {3: "faulty", 4: "faulty"}
        ctx.assigns_roles(lambda spec, world: {4: "server"})
        with pytest.raises(UsageError, match="two roles"):
            ctx.assign_roles({"faulty": 1}, 5)
    finally:
        ctx._ROLE_ASSIGNERS[:] = before


# -- ledgers --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload,world", [(1000, 2), (1001, 3), (7, 4), (4 * 269, 8)])
def test_a_ring_all_reduce_sends_2_n_minus_1_over_n_of_the_payload_in_whole_bytes(payload, world):
    from repro.sync import ring_all_reduce_bytes

    per_rank = [ring_all_reduce_bytes(payload, world, r) for r in range(world)]
    assert sum(per_rank) == 2 * (world - 1) * payload  # the mean is exactly 2(N-1)/N x the payload
    assert max(per_rank) - min(per_rank) <= 2  # chunks differ by one byte at most
    assert ring_all_reduce_bytes(payload, 1, 0) == 0


def test_the_ledger_books_train_and_eval_apart_and_survives_a_checkpoint_of_either_version():
    from repro.context import RunContext
    from repro.sync import LEDGER_COLUMNS, SyncPolicy

    policy = SyncPolicy(RunContext.build(0, 4, "cpu", 0))
    policy.count([torch.zeros(10), torch.zeros(5, dtype=torch.float64)])  # 80 bytes, 4 ranks: rank 0 sends 2 x 60
    with policy.booking("eval"):
        policy.book(payload=8, sent=24, received=16)
    state = policy.state_dict()
    assert state == {"comm_rounds": 1, "comm_bytes": 80, "eval_comm_rounds": 1, "eval_comm_bytes": 8,
                     "bytes_sent": 120, "bytes_received": 120, "eval_bytes_sent": 24, "eval_bytes_received": 16}
    assert list(state) == list(LEDGER_COLUMNS)
    assert (policy.comm_rounds, policy.comm_bytes, policy.eval_comm_rounds, policy.eval_comm_bytes) == (1, 80, 1, 8)
    other = SyncPolicy(RunContext.build(0, 4, "cpu", 0))
    other.load_state_dict(state)
    assert other.state_dict() == state
    other.load_state_dict({"comm_rounds": 3, "comm_bytes": 240})  # written before wire bytes were booked
    assert other.state_dict()["bytes_sent"] == 2 * (240 - 60) and other.state_dict()["eval_bytes_sent"] == 0


# -- columns --------------------------------------------------------------------------------------------------------

def _trainer(optimizer, hparams, callbacks=()):
    from repro import optim
    from repro.config import TrainSettings
    from repro.context import RunContext
    from repro.sync import SyncPolicy
    from repro.trainer import Trainer

    torch.manual_seed(0)
    task = ToyRegression()
    context = RunContext.build(0, 1, "cpu", 0)
    opt = optim.make(optimizer, task.model.parameters(), **hparams)
    rows = Rows()
    return Trainer(task, opt, SyncPolicy(context), lambda e: 1.0, TrainSettings(epochs=2), rows, NullProgress(),
                   context, list(callbacks)), rows


def test_components_declare_their_columns_and_the_trainer_names_none_of_them():
    from repro.callbacks import IterateAveraging
    from repro.epoch_metrics import BASE_COLUMNS

    assert "clip_fraction" not in BASE_COLUMNS and "averaged_iterate" not in BASE_COLUMNS
    adam, _ = _trainer("adam", {"lr": 0.01})
    assert "clip_fraction" not in adam.columns and "averaged_iterate" not in adam.columns
    clipped, rows = _trainer("clipped-sgd", {"lr": 0.05, "clip": 1.0}, [IterateAveraging(1)])
    assert {"clip_fraction", "averaged_iterate", "val_loss", "bytes_sent", "worker_spread"} <= set(clipped.columns)
    assert clipped.columns[-1] == "status"
    clipped.run()
    assert set(rows.rows[-1]) <= set(clipped.columns) and "clip_fraction" in rows.rows[-1]


def test_a_column_two_components_declare_is_refused():
    from repro.callbacks import Callback
    from repro.errors import UsageError

    class Clash(Callback):
        metric_columns = ("val_loss",)

    with pytest.raises(UsageError, match="val_loss.*both"):
        _trainer("sgd", {"lr": 0.01}, [Clash()])


def test_metrics_csv_refuses_an_undeclared_column_and_widens_an_older_header(tmp_path):
    from repro.runlog import MetricsCSV

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,clip_fraction,comm_bytes,status\n1,0.5,100,\n")  # an older run's header
    sink = MetricsCSV(path, ["epoch", "comm_bytes", "bytes_sent", "staleness", "status"])
    with pytest.raises(ValueError, match="undeclared column.*averaged_iterate"):
        sink.write({"epoch": 2, "averaged_iterate": 3})
    sink.write({"epoch": 2, "comm_bytes": 200, "bytes_sent": 200, "staleness": 1.5, "status": "done"})
    sink.close()
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["epoch", "clip_fraction", "comm_bytes", "bytes_sent", "staleness", "status"]
    assert rows[0] == {"epoch": "1", "clip_fraction": "0.5", "comm_bytes": "100", "bytes_sent": "", "staleness": "",
                       "status": ""}
    assert rows[1]["staleness"] == "1.5" and rows[1]["clip_fraction"] == ""


# -- the step without the loop --------------------------------------------------------------------------------------

def test_the_step_alone_takes_the_loops_steps():
    """A driver of its own (a federated client's K local steps) running TrainStep gives the trainer's model."""
    from repro import optim
    from repro.context import RunContext
    from repro.step import BatchFeed, TrainStep
    from repro.sync import SyncPolicy

    looped, _ = _trainer("sgd", {"lr": 0.05, "momentum": 0.9})
    looped.run()

    torch.manual_seed(0)
    task = ToyRegression()
    opt = optim.make("sgd", task.model.parameters(), lr=0.05, momentum=0.9)
    feed = BatchFeed(task.batches_from)  # the batches in the loop's order (each drawn one step ahead)
    step = TrainStep(task, opt, SyncPolicy(RunContext.build(0, 1, "cpu", 0)), feed.next)
    for epoch in range(2):
        feed.start_epoch(epoch)
        for _ in range(trainer_helpers.BATCHES_PER_EPOCH):
            step(epoch)
    assert step.steps == step.grad_evals == 10 and step.samples == 10 * trainer_helpers.BATCH
    for a, b in zip(looped.model.state_dict().values(), step.model.state_dict().values()):
        assert torch.equal(a, b)


# -- masks and ledgers across real processes ------------------------------------------------------------------------

def _no_wall(rows):
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


@pytest.mark.slow
@pytest.mark.dist
def test_a_masked_faulty_rank_sending_nan_is_left_out_and_bytes_are_reduced_over_ranks(tmp_path):
    world = 3
    spec = {"task": {"name": "toy", "options": {}}, "optimizer": {"name": "sgd", "hparams": {"lr": 0.01}},
            "sync": {"name": "none", "options": {}}, "schedule": {"name": "constant", "options": {}},
            "train": {"epochs": 2, "seed": 3, "machines": world}}
    dist_helpers.spawn(trainer_helpers.masks_and_ledgers, world, str(tmp_path / "store"), str(tmp_path), spec)
    out = json.loads((tmp_path / "masks.json").read_text())
    for policy in ("none", "average"):
        poisoned, healthy = out[f"{policy}: poisoned, masked"], out[f"{policy}: healthy, masked"]
        assert [r["status"] for r in poisoned] == ["", "done"]
        assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in poisoned)
        # the masked rank's values reach no metric: its NaN model and its healthy one give the same rows
        assert _no_wall(poisoned) == _no_wall(healthy)
        # the same NaN on a rank that counts: diverged at the first epoch end, on the loss or the model
        assert [r["status"] for r in out[f"{policy}: poisoned, counted"]] == ["diverged"]
    # the base policy scores the counted ranks' mean in a copy: booked as evaluation traffic
    assert out["average: poisoned, masked"][0]["eval_comm_rounds"] == 1

    columns = out["booking columns"]
    for role in ("server", "honest", "faulty"):
        assert f"bytes_sent_{role}" in columns and f"bytes_received_{role}" in columns
    first = out["booking"][0]  # 5 steps; rank r booked 10 (r + 1) payload, 100 (r + 1) sent, 7 received a step
    assert (first["comm_rounds"], first["comm_bytes"], first["bytes_sent"], first["bytes_received"]) == \
           (5, 100, 1000, 35)  # means over the three ranks, not rank 0's
    assert (first["bytes_sent_server"], first["bytes_sent_honest"], first["bytes_sent_faulty"]) == (500, 1000, 1500)
    assert first["bytes_received_server"] == first["bytes_received_faulty"] == 35

    periodic, payload = out["periodic"], out["periodic payload"]
    assert [r["comm_rounds"] for r in periodic] == [1, 2]
    assert [r["comm_bytes"] for r in periodic] == [payload, 2 * payload]  # as every periodic run has written
    assert all(3 * r["bytes_sent"] == 4 * r["comm_bytes"] == 3 * r["bytes_received"] for r in periodic)  # 2(N-1)/N
    assert "bytes_sent_honest" not in periodic[0]  # one role: no per-role columns
