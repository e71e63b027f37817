"""The federated driver: exact emulation (any process may compute any client), checkpoint/resume of the clock and
the server model, and FedAvg with full participation equal to periodic model averaging."""
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import dist_helpers
from repro import federated, optim
from repro.federated.driver import FederatedDriver, client_batches
from repro.task import Batch, Task


class TinyTask(Task):
    """A 3-class softmax regression on 120 fixed random points (the same on every process)."""
    metric_columns = ()

    def __init__(self, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.train_x = torch.randn(120, 4, generator=gen)
        self.train_y = (self.train_x[:, 0] > 0).long() + (self.train_x[:, 1] > 0.5).long()
        torch.manual_seed(1)
        self.model = torch.nn.Linear(4, 3)

    def batch_of(self, indices):
        return Batch((self.train_x[indices], self.train_y[indices]), samples=len(indices))

    def train_batches(self, epoch):
        return iter(())

    def training_loss(self, batch):
        x, y = batch.data
        loss = F.cross_entropy(self.model(x), y)
        return loss, loss

    def eval_sums(self, split):
        return torch.zeros(1)

    def eval_metrics(self, split, sums):
        return {}


def _driver(scheme, clients, opts, context=None, momentum=0.9, K=3):
    task = TinyTask()
    tau = federated.client_times(len(clients), 0.5)
    strategy = federated.make(scheme, **opts).bind(tau)
    return FederatedDriver(task, strategy, clients, lambda params: optim.make("sgd", params, lr=0.1,
                                                                              momentum=momentum),
                           local_steps=K, batch_size=8, seed=3, context=context)


def _shards(m):
    return [torch.arange(i, 120, m) for i in range(m)]


@pytest.mark.parametrize("scheme,opts", [("fedasync", {"weighting": "reweighted"}), ("fedfix", {"dt": 0.4})])
def test_resume_is_bit_identical(scheme, opts):
    whole = _driver(scheme, _shards(5), opts)
    whole.run_until(3)
    first = _driver(scheme, _shards(5), opts)
    first.run_until(1.5)
    state = first.state_dict()
    second = _driver(scheme, _shards(5), opts)
    second.load_state_dict(state)
    second.run_until(3)
    assert second.totals == whole.totals and second.totals.aggregations > first.totals.aggregations > 0
    assert all(torch.equal(a, b) for a, b in zip(second.server, whole.server))
    assert float(second.strategy.time) == float(whole.strategy.time)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # every device this machine has


@pytest.mark.parametrize("device", DEVICES)
def test_resume_from_a_checkpoint_read_onto_the_cpu(device):
    """As `repro resume` does: the state goes through torch.save and comes back with map_location="cpu"; the
    driver puts the server model, the versions and the kept updates back on the clients' device and continues
    exactly (on a GPU the CPU copies would otherwise meet CUDA tensors in the first local work)."""
    import io

    from repro.context import RunContext

    def driver():
        task = TinyTask()
        task.model.to(device)
        task.train_x, task.train_y = task.train_x.to(device), task.train_y.to(device)
        strategy = federated.make("fedasync", weighting="reweighted").bind(federated.client_times(5, 0.5))
        return FederatedDriver(task, strategy, _shards(5), lambda params: optim.make("sgd", params, lr=0.1),
                               local_steps=3, batch_size=8, seed=3, context=RunContext.build(0, 1, device, 0))

    whole = driver()
    whole.run_until(3)
    first = driver()
    first.run_until(1.5)
    state = first.state_dict()
    assert all(t.device.type == "cpu" for t in state["server"])  # checkpoints hold CPU tensors
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    second = driver()
    second.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=False))
    assert all(t.device.type == device for t in second.server)
    second.run_until(3)
    assert second.totals == whole.totals
    assert all(torch.equal(a, b) for a, b in zip(second.server, whole.server))


def test_driver_counts_staleness_participation_and_emulated_bytes():
    driver = _driver("fedasync", _shards(4), {})
    driver.run_until(2)
    times, versions = federated.schedule("fedasync", federated.client_times(4, 0.5), 2)
    assert driver.totals.participation == (versions >= 0).sum(axis=0).tolist()
    rows, cols = (versions >= 0).nonzero()
    staleness = rows - versions[rows, cols]
    m = driver.metrics()
    assert m["aggregations"] == len(times) and m["staleness_max"] == staleness.max()
    assert m["staleness_mean"] == pytest.approx(staleness.mean())
    model_bytes = 4 * (4 * 3 + 3)
    assert m["emulated_bytes_up"] == m["emulated_bytes_down"] == len(rows) * model_bytes
    assert m["process_bytes"] == 0  # one process: nothing crossed a process group
    assert 0 < driver.federated_loss() < 5


def test_more_processes_than_clients_is_a_usage_error():
    from repro.context import RunContext
    from repro.errors import UsageError

    with pytest.raises(UsageError, match="3 processes for 2 clients"):
        _driver("fedavg", _shards(2), {}, context=RunContext.build(0, 3, "cpu", 0, planning=True))


# -- real processes ---------------------------------------------------------------------------------------------
def federated_worker(rank, world, store_file, out_dir):
    dist_helpers.init(rank, world, store_file)
    out = {}
    # Six clients on `world` processes: the server model on every process, after a FedBuff and a FedAsync run.
    for scheme, opts in [("fedbuff", {"c": 3}), ("fedasync", {"weighting": "reweighted"})]:
        driver = _driver(scheme, _shards(6), opts)
        driver.run_until(3)
        flat = torch.cat([t.reshape(-1) for t in driver.server])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        out[scheme] = {"server": flat.tolist(), "same": all(torch.equal(gathered[0], g) for g in gathered),
                       "aggregations": driver.totals.aggregations, "process_bytes": driver.totals.process_bytes,
                       "local_steps": driver.totals.local_steps}
    if world == 2:
        # FedAvg, M = N = 2, full participation, iid shards, plain SGD, K steps == periodic averaging every K steps
        K, rounds = 4, 3
        driver = _driver("fedavg", _shards(2), {}, momentum=0.0, K=K)
        driver.run_until(rounds)
        fed = torch.cat([t.reshape(-1) for t in driver.server])
        from repro import sync

        task = TinyTask()
        model = task.model
        policy = sync.make("periodic", interval=K)
        opt = optim.make("sgd", model.parameters(), lr=0.1, momentum=0.0)
        for version in range(rounds):  # worker `rank` plays client `rank`, as the driver deals them
            seed = federated.driver.client_seed(3, rank, version)
            batches = client_batches(task, _shards(2)[rank], 8, torch.Generator().manual_seed(seed))
            for _ in range(K):
                opt.zero_grad()
                task.training_loss(next(batches))[0].backward()
                opt.step()
                policy.after_step(model)
        periodic = torch.cat([t.detach().reshape(-1) for t in model.parameters()])
        out["fedavg_vs_periodic"] = (fed - periodic).abs().max().item()
        out["fedavg_moved"] = (fed - torch.cat([t.reshape(-1) for t in _driver("fedavg", _shards(2), {}).server])).abs().max().item()
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump(out, f)
    dist_helpers.leave_process_group(finished=True)


@pytest.mark.slow
@pytest.mark.dist
def test_six_clients_on_two_processes_equal_six_on_three(tmp_path):
    results = {}
    for world in (2, 3):
        folder = tmp_path / str(world)
        folder.mkdir()
        dist_helpers.spawn(federated_worker, world, str(folder / "store"), str(folder))
        results[world] = [json.loads((folder / f"{r}.json").read_text()) for r in range(world)]
    for scheme in ("fedbuff", "fedasync"):
        for world in (2, 3):
            assert all(r[scheme]["same"] for r in results[world])  # the server model is the same on every process
            assert results[world][0][scheme]["process_bytes"] > 0
            assert all(r[scheme]["local_steps"] > 0 for r in results[world])  # every process computed clients
        two = torch.tensor(results[2][0][scheme]["server"])
        three = torch.tensor(results[3][0][scheme]["server"])
        assert torch.allclose(two, three, atol=1e-6)  # up to summation order
        assert results[2][0][scheme]["aggregations"] == results[3][0][scheme]["aggregations"]
    for r in results[2]:
        assert r["fedavg_vs_periodic"] < 1e-6 and r["fedavg_moved"] > 1e-3


def test_the_loop_resumes_a_stopped_run_as_if_never_stopped():
    from repro.federated.loop import Clients, FederatedLoop

    clients = Clients(clients=4, spread=0.5, local_steps=2, horizon=3, eval_every=1)

    def loop():
        return FederatedLoop(_driver("fedbuff", _shards(4), {"c": 2}, K=2), TinyTask(), clients, _single())

    whole = loop()
    rows_whole = []
    whole.run(on_row=lambda l, stopped: rows_whole.append(l.rows))
    calls = []
    first = loop()
    saved = {}

    def stop():
        calls.append(1)
        return len(calls) == 5  # inside the second interval

    def on_row(l, stopped):
        saved.update(l.state_dict())

    assert first.run(should_stop=stop, on_row=on_row)["status"] == "interrupted"
    second = loop()
    second.load_state_dict(saved)
    assert second.run()["status"] == "finished"
    assert second.rows == whole.rows == 4  # the initial model's row and one per time unit
    assert all(torch.equal(a, b) for a, b in zip(second.driver.server, whole.driver.server))
    assert second.driver.totals == whole.driver.totals


def test_a_resume_after_the_last_row_returns_that_row(tmp_path):
    """Stopped after the final row's checkpoint, before summary.json: the resume has no interval left and must still
    return the final row (it returned only the status, and the summary lost every metric)."""
    from repro.federated.loop import Clients, FederatedLoop

    clients = Clients(clients=4, spread=0.5, local_steps=2, horizon=2, eval_every=1)

    def loop():
        return FederatedLoop(_driver("fedbuff", _shards(4), {"c": 2}, K=2), TinyTask(), clients, _single())

    first, states = loop(), []
    final = first.run(on_row=lambda l, stopped: states.append(l.state_dict()))
    torch.save(states[-1], tmp_path / "last.pt")
    again = loop()
    again.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True))
    resumed = again.run()
    assert resumed == json.loads(json.dumps(final, default=str)) and "train_loss" in resumed


def _single():
    from repro.context import RunContext

    return RunContext.build(0, 1, "cpu", 0)
