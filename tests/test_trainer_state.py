"""The stateful Trainer: a run stopped at an epoch end and continued from ``state_dict()`` in fresh processes gives
the uninterrupted run's rows (all but wall_seconds); the batch stream's epoch boundaries; evaluation on a copy;
divergence by a non-finite parameter."""
import copy
import json
import math

import pytest
import torch

import dist_helpers
import trainer_helpers
from trainer_helpers import NullProgress, Rows, ToyRegression

EPOCHS = 5


def _spec(optimizer, hparams, sync="none", sync_options=None, eval_sync="copy", **train):
    return {"task": {"name": "toy", "preset": "test", "options": {}},
            "optimizer": {"name": optimizer, "hparams": hparams},
            "sync": {"name": sync, "options": sync_options or {}},
            "schedule": {"name": "step", "options": {"milestones": [3], "gamma": 0.5}},
            "train": {"epochs": EPOCHS, "max_steps": None, "eval_batches": None, "seed": 3, "machines": 2,
                      "eval_sync": eval_sync, **train}}


SETTINGS = {
    # CELGC with every paper feature on: loss multiplier, magnitude statistics, NT-ASGD iterate averaging
    "clipped-sgd + periodic": (_spec("clipped-sgd", {"lr": 0.05, "clip": 1.0}, "periodic", {"interval": 3},
                                     loss_multiplier=2.0, log_stats=[1, 4], average_after_nonmono=1), 2),
    "adamw + every-step": (_spec("adamw", {"lr": 0.01, "weight_decay": 1e-3}, "every-step"), 2),
    # two gradients per step on 5 batches an epoch: the state at epoch 3's end has read into epoch 4's batches
    "sgdol + none (read past the epoch end)": (_spec("sgdol", {}, "none"), 3),
    "sgdol + periodic, in-place evaluation": (_spec("sgdol", {}, "periodic", {"interval": 2}, eval_sync="in-place"), 3),
    # stopped between two steps (SIGTERM, --checkpoint-minutes): step 7 is 2 steps into epoch 2 (5 steps an epoch)
    "clipped-sgd + periodic, mid-epoch": (_spec("clipped-sgd", {"lr": 0.05, "clip": 1.0}, "periodic", {"interval": 3},
                                                loss_multiplier=2.0, log_stats=[1, 2], average_after_nonmono=1),
                                          ("step", 7)),
    # step 7: two steps into epoch 3 (epochs of 3 and 2 steps), whose stream began in epoch 2 (the workers act on
    # a request one check later, so no stop falls one step into an epoch: its first check has none posted)
    "sgdol + none, mid-epoch after a read-past": (_spec("sgdol", {}, "none"), ("step", 7)),
    # both gradients of a step on one batch: 5 steps an epoch, stopped at an epoch end and between two steps
    "sgdol + periodic, same-batch": (_spec("sgdol", {}, "periodic", {"interval": 2}, pairing="same-batch",
                                           log_stats=[1, 4], average_after_nonmono=1), 2),
    "sgdol + none, same-batch, mid-epoch": (_spec("sgdol", {}, "none", pairing="same-batch"), ("step", 7)),
}


def _spawn(fn, world, tmp_path, store, *args):
    dist_helpers.spawn(fn, world, str(tmp_path / store), str(tmp_path), *args)


def _no_wall(rows):
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("name", list(SETTINGS))
def test_state_dict_at_an_epoch_end_continues_the_run_exactly(tmp_path, name):
    spec, stop_after = SETTINGS[name]
    world = 2
    _spawn(trainer_helpers.whole_then_first_part, world, tmp_path, "store1", spec, stop_after)
    _spawn(trainer_helpers.resume, world, tmp_path, "store2", spec)
    for rank in range(world):
        first = json.loads((tmp_path / f"first{rank}.json").read_text())
        rest = json.loads((tmp_path / f"rest{rank}.json").read_text())
        whole = first["whole"]
        if isinstance(stop_after, tuple):  # mid-epoch
            done = sum(r["iteration"] < stop_after[1] for r in whole["rows"])
            assert first["result"] == {"status": "interrupted", "epochs_done": done, "step": stop_after[1]}
            assert stop_after[1] not in [r["iteration"] for r in whole["rows"]]  # really between two epoch ends
        else:
            done = stop_after
            assert first["result"] == {"status": "interrupted", "epochs_done": stop_after}
        assert len(first["rows"]) == done and len(whole["rows"]) == EPOCHS
        assert _no_wall(first["rows"] + rest["rows"]) == _no_wall(whole["rows"])
        assert rest["stats"] == whole["stats"]
        assert whole["last"]["status"] == "done"
    rows = whole["rows"]
    if spec["sync"]["name"] == "periodic" and spec["train"]["eval_sync"] == "copy":
        interval = spec["sync"]["options"]["interval"]
        assert [r["comm_rounds"] for r in rows] == [r["iteration"] // interval for r in rows]
        assert [r["eval_comm_rounds"] for r in rows] == [sum(x["iteration"] % interval != 0 for x in rows[:i + 1])
                                                        for i in range(len(rows))]
        assert any(r.get("averaged_iterate") for r in rows[done:])  # NT-ASGD was on after the resume point
        stats = whole["stats"]
        assert stats["steps"][0] > 0 and stats["steps"][1] > 0
    if "same-batch" in name:  # one batch per step, two gradients on it
        assert [r["iteration"] for r in rows] == [5, 10, 15, 20, 25]
        assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert [r["grad_evals"] for r in rows] == [2 * r["iteration"] for r in rows]
    elif name.startswith("sgdol"):  # 10 batches, 2 per step: epochs of 3 and 2 steps
        assert [r["iteration"] for r in rows] == [3, 5, 8, 10, 13]
        assert [r["epoch"] for r in rows] == [1.2, 2.0, 3.2, 4.0, 5.2]
        assert [r["grad_evals"] for r in rows] == [2 * r["iteration"] for r in rows]
    else:
        assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]


# -- one process ------------------------------------------------------------------------------------------------

def _trainer(optimizer="sgdol", hparams=None, epochs=4, callbacks=(), task_cls=ToyRegression, pairing="fresh-batch"):
    from repro import optim
    from repro.config import TrainSettings
    from repro.context import RunContext
    from repro.sync import SyncPolicy
    from repro.trainer import Trainer

    torch.manual_seed(0)
    task = task_cls()
    opt = optim.make(optimizer, task.model.parameters(), **(hparams or {}))
    rows = Rows()
    context = RunContext.build(0, 1, "cpu", 0)
    trainer = Trainer(task, opt, SyncPolicy(context), lambda e: 0.5 ** e, TrainSettings(epochs=epochs, pairing=pairing),
                      rows, NullProgress(), context, callbacks)
    return trainer, rows


def test_an_epoch_that_began_with_batches_read_past_the_previous_end_runs_until_its_stream_ends():
    trainer, rows = _trainer(epochs=4)
    trainer.run()
    # 5 batches an epoch, two per SGDOL step: 3 steps (one batch of epoch 2), then 2, 3, 2
    assert [r["iteration"] for r in rows.rows] == [3, 5, 8, 10]
    assert [r["epoch"] for r in rows.rows] == [1.2, 2.0, 3.2, 4.0]


@pytest.mark.parametrize("stop_after", [1, 2])
def test_one_process_resume_is_exact_with_batches_read_past_the_epoch_end(stop_after):
    whole, whole_rows = _trainer()
    whole.run()
    first, first_rows = _trainer()
    states = []
    result = first.run(should_stop=lambda: first.epoch >= stop_after,
                       on_epoch_end=lambda t, row: states.append(copy.deepcopy(t.state_dict())))
    assert result == {"status": "interrupted", "epochs_done": stop_after}
    state = states[-1]
    assert state["feed"]["taken"] == (1 if stop_after == 1 else 0)  # epoch 1 ends one batch into epoch 2's stream
    rest, rest_rows = _trainer()
    torch.manual_seed(99)
    rest.load_state_dict(state)
    rest.run()
    assert _no_wall(first_rows.rows + rest_rows.rows) == _no_wall(whole_rows.rows)
    for a, b in zip(whole.model.state_dict().values(), rest.model.state_dict().values()):
        assert torch.equal(a, b)


class NumberedToy(ToyRegression):
    """Batches numbered (epoch, k); every closure call records the batch it trained on, its loss, and the carried
    value it started from."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen = []

    def train_batches(self, epoch):
        for k, batch in enumerate(super().train_batches(epoch)):
            batch.number = (epoch, k)
            yield batch

    def training_loss(self, batch):
        carry = float(self.carry)
        objective, loss = super().training_loss(batch)
        self.seen.append((batch.number, float(loss.detach()), carry))
        return objective, loss


@pytest.mark.parametrize("pairing", ["fresh-batch", "same-batch"])
def test_pairing_decides_which_batches_a_two_gradient_step_sees(pairing):
    trainer, rows = _trainer(epochs=2, task_cls=NumberedToy, pairing=pairing)
    trainer.run()
    seen = trainer.task.seen
    numbers = [n for n, _, _ in seen]
    if pairing == "fresh-batch":  # 10 batches, two per step: epochs of 3 and 2 steps
        assert numbers == [(0, k) for k in range(5)] + [(1, 0)] + [(1, k) for k in range(1, 5)]
        assert [r["iteration"] for r in rows.rows] == [3, 5] and [r["epoch"] for r in rows.rows] == [1.2, 2.0]
        return
    # one batch per step: both calls of a step see it, from the same carried state; twice fresh-batch's steps
    assert numbers == [(e, k) for e in range(2) for k in range(5) for _ in range(2)]
    assert all(seen[i][2] == seen[i + 1][2] for i in range(0, len(seen), 2))
    assert [r["iteration"] for r in rows.rows] == [5, 10] and [r["epoch"] for r in rows.rows] == [1.0, 2.0]
    assert [r["grad_evals"] for r in rows.rows] == [10, 20]
    assert trainer.counts["seen"] == 2 * 5 * 8  # each batch's samples once
    first_calls = [loss for _, loss, _ in seen[0:10:2]]  # the loss logged is the first call's, once per batch
    assert rows.rows[0]["train_loss"] == pytest.approx(sum(first_calls) / len(first_calls))


class InPlaceCarryToy(NumberedToy):
    """Updates its carried value in place, as a running count does (``self._correct += ...``)."""

    def training_loss(self, batch):
        x, y = batch.data
        carry = float(self.carry)
        loss = torch.nn.functional.mse_loss(self.model(x).squeeze(1) + 0.1 * carry, y.squeeze(1))
        self.carry.mul_(0.5).add_(loss.detach())
        self.seen.append((batch.number, float(loss.detach()), carry))
        return loss, loss


def test_same_batch_pairing_restores_a_carried_state_the_task_updates_in_place():
    trainer, _ = _trainer(epochs=1, task_cls=InPlaceCarryToy, pairing="same-batch")
    trainer.run()
    seen = trainer.task.seen
    assert len(seen) == 10 and len({carry for _, _, carry in seen}) > 1
    assert all(seen[i][2] == seen[i + 1][2] for i in range(0, len(seen), 2))  # both calls from the same state


@pytest.mark.parametrize("stop_after", [1, 2])
def test_one_process_resume_is_exact_with_same_batch_pairing(stop_after):
    def make():
        return _trainer(pairing="same-batch")

    whole, whole_rows = make()
    whole.run()
    first, first_rows = make()
    states = []
    first.run(should_stop=lambda: first.epoch >= stop_after,
              on_epoch_end=lambda t, row: states.append(copy.deepcopy(t.state_dict())))
    assert states[-1]["feed"]["taken"] == 0  # one batch per step: never reads past an epoch end
    rest, rest_rows = make()
    torch.manual_seed(99)
    rest.load_state_dict(states[-1])
    rest.run()
    assert _no_wall(first_rows.rows + rest_rows.rows) == _no_wall(whole_rows.rows)


def test_a_resume_from_the_final_checkpoint_returns_the_last_row(tmp_path):
    """A run stopped after its last epoch's checkpoint but before its summary was written: the resume has no step
    left to take and must still hand back the final row (it returned {}, and summary.json was written empty)."""
    first, _ = _trainer(optimizer="adamw", hparams={"lr": 0.01}, epochs=2)
    states = []
    final = first.run(on_epoch_end=lambda t, row: states.append(copy.deepcopy(t.state_dict())))
    assert final["status"] == "done"
    torch.save(states[-1], tmp_path / "last.pt")
    rest, rest_rows = _trainer(optimizer="adamw", hparams={"lr": 0.01}, epochs=2)
    rest.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True))
    assert rest.run() == json.loads(json.dumps(final))
    assert rest_rows.rows == []  # nothing trained or logged again


def test_state_dict_holds_every_component():
    trainer, _ = _trainer(optimizer="adamw", hparams={"lr": 0.01}, epochs=2)
    trainer.run()
    state = trainer.state_dict()
    assert set(state) == {"epoch", "counts", "running", "model", "optimizer", "sync", "step_sizes", "callbacks", "feed",
                          "task", "rng", "last_row"}
    assert state["running"] == {"loss_sum": 0.0, "samples": 0}  # at an epoch end
    assert set(state["counts"]) == {"iteration", "grad_evals", "seen", "train_seconds", "rows"}
    assert state["epoch"] == 2 and state["counts"]["iteration"] == 10 and state["counts"]["seen"] == 80
    assert state["feed"] == {"epoch": 2, "taken": 0, "rng": []}  # the next epoch's stream opens fresh
    assert state["step_sizes"]["scheduled"] == [{"lr": 0.01 * 0.5}]  # epoch 1's step size, the last one used
    assert state["optimizer"]["state"]  # Adam's moments
    assert set(state["rng"]) >= {"python", "torch"}
    torch.save(state, "/dev/null")  # serialisable as a checkpoint


@pytest.mark.slow
@pytest.mark.dist
def test_wall_seconds_is_the_slowest_workers_training_time(tmp_path):
    spec = _spec("sgd", {"lr": 0.01}, "none")
    spec["train"]["epochs"] = 1
    _spawn(trainer_helpers.slow_second_worker, 2, tmp_path, "store", spec, 0.2)
    (row,) = json.loads((tmp_path / "rows.json").read_text())  # rank 0's, which never paused
    assert row["wall_seconds"] >= trainer_helpers.BATCHES_PER_EPOCH * 0.2


def test_should_stop_ends_the_run_mid_epoch_after_the_agreed_step(monkeypatch):
    import repro.trainer

    monkeypatch.setattr(repro.trainer, "STOP_CHECK_EVERY", 3)
    trainer, rows = _trainer(optimizer="sgd", hparams={"lr": 0.01}, epochs=10)  # 5 steps an epoch
    result = trainer.run(should_stop=lambda: trainer.counts["iteration"] >= 7)
    assert result == {"status": "interrupted", "epochs_done": 1, "step": 9}  # asked every 3 steps: after step 9
    assert trainer.counts["iteration"] == 9 and len(rows.rows) == 1


def test_a_stop_request_at_an_epoch_end_comes_after_the_row_and_the_checkpoint():
    trainer, rows = _trainer(optimizer="sgd", hparams={"lr": 0.01}, epochs=10)
    ends = []
    result = trainer.run(should_stop=lambda: trainer.counts["iteration"] >= 7, on_epoch_end=lambda t, r: ends.append(r))
    assert result == {"status": "interrupted", "epochs_done": 2}  # asked at step 10, the end of epoch 2
    assert trainer.counts["iteration"] == 10 and len(rows.rows) == 2 and len(ends) == 2


def test_a_non_finite_parameter_with_a_finite_loss_is_diverged():
    from repro.callbacks import Callback

    class Poison(Callback):
        def after_step(self, model, epoch):
            with torch.no_grad():
                if epoch == 1:
                    model[4].bias.fill_(float("nan"))

    class Unused(ToyRegression):
        def training_loss(self, batch):  # the last layer's bias never reaches the loss
            x, y = batch.data
            out = torch.nn.functional.linear(self.model[:4](x), self.model[4].weight).squeeze(1)
            loss = torch.nn.functional.mse_loss(out, y.squeeze(1))
            return loss, loss

    trainer, rows = _trainer(optimizer="sgd", hparams={"lr": 0.01}, epochs=4, callbacks=[Poison()], task_cls=Unused)
    last = trainer.run()
    assert [r["status"] for r in rows.rows] == ["", "diverged"] and last["status"] == "diverged"
    assert math.isfinite(rows.rows[-1]["train_loss"]) and "val_loss" not in rows.rows[-1]


# -- what evaluation sees -----------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("policy,options", [("periodic", {"interval": 4}), ("every-step", {}), ("none", {})])
def test_eval_model_averages_into_a_copy_and_leaves_training_alone(tmp_path, policy, options):
    world = 2
    _spawn(trainer_helpers.eval_model_worker, world, tmp_path, "store", policy, options)
    for rank in range(world):
        r = json.loads((tmp_path / f"{rank}.json").read_text())
        assert r["training_untouched"]
        before, after = r["state_before"], r["state_after"]
        assert after["comm_rounds"] == before["comm_rounds"] and after["comm_bytes"] == before["comm_bytes"]
        if policy == "none":  # each worker scores its own model; nothing sent
            assert r["same_object"] and after["eval_comm_rounds"] == 0
            continue
        assert not r["same_object"] and r["copy_reused"] and r["is_mean"]
        sent = r["numel"] if policy == "periodic" else r["buffer_numel"]  # every-step: parameters already equal
        assert after["eval_comm_rounds"] == 2 and after["eval_comm_bytes"] == 2 * sent * 4
        if policy == "periodic":
            assert after["steps_since_sync"] == before["steps_since_sync"] == 2  # the I-step schedule goes on


@pytest.mark.slow
@pytest.mark.dist
def test_a_non_finite_model_average_is_diverged_on_every_worker(tmp_path):
    spec = _spec("sgd", {"lr": 0.01}, "periodic", {"interval": 5})
    _spawn(trainer_helpers.poisoned_average_worker, 2, tmp_path, "store", spec)
    for rank in range(2):
        r = json.loads((tmp_path / f"{rank}.json").read_text())
        assert [row["status"] for row in r["rows"]] == ["diverged"] and r["last"]["status"] == "diverged"
        assert math.isfinite(r["rows"][0]["train_loss"])


def test_task_carried_state_defaults_to_the_named_attributes():
    from repro.task import Task

    class Carrying(ToyRegression):
        carried_state = ("hidden",)
        state_dict, load_state_dict = Task.state_dict, Task.load_state_dict  # the base's defaults

    task = Carrying()
    task.device = torch.device("cpu")
    task.hidden = [(torch.ones(1, 2), torch.zeros(1, 2))]
    state = task.state_dict()
    other = Carrying()
    other.device = torch.device("cpu")
    other.load_state_dict(state)
    assert isinstance(other.hidden, list) and torch.equal(other.hidden[0][0], torch.ones(1, 2))
