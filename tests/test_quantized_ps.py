"""The quantized parameter server in real gloo process groups: with the identity quantizer it is Adam with
every-step gradient averaging; quantized, every rank holds the server's quantized weights and a worker's payload is
steps x its packed message."""
import json
import math
import os

import pytest
import torch
import torch.distributed as dist

import dist_helpers
from repro.errors import UsageError

STEPS = 6


def _model():
    torch.manual_seed(0)  # the same initial weights on every rank
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(rank, policy_name, options, steps=STEPS):
    from repro import optim, sync
    from repro.context import RunContext

    model = _model()
    context = RunContext.current()
    policy = sync.make(policy_name, context=context, **options)
    forward = policy.wrap(model)
    opt = optim.make("adam", model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(100 + rank)  # each worker its own data
    for _ in range(steps):
        x, y = torch.randn(16, 5, generator=gen), torch.randn(16, 3, generator=gen)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(forward(x), y)
            loss.backward()
            policy.on_gradients(model)
            return loss

        policy.before_step(model)
        opt.step(closure)
        policy.after_step(model)
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return params, policy


def ps_worker(rank, world, store_file, out_dir):
    dist_helpers.init(rank, world, store_file)
    reference, _ = _train(rank, "every-step", {"bucketed": False})
    identity, _ = _train(rank, "quantized-ps", {"quantizer": "identity", "bits_up": 32, "bits_down": 32})
    quantized, policy = _train(rank, "quantized-ps", {"quantizer": "scaled-sign", "bits_up": 1, "bits_down": 4})
    gathered = [torch.zeros_like(quantized) for _ in range(world)]
    dist.all_gather(gathered, quantized)
    up_size = sum(math.ceil(p.numel() / 8) + 4 for p in _model().parameters())
    down_size = sum(math.ceil(p.numel() * 4 / 8) + 4 for p in _model().parameters())
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"reference": reference.tolist(), "identity": identity.tolist(),
                   "same_everywhere": all(torch.equal(gathered[0], g) for g in gathered),
                   "levels": len(set(quantized[:35].tolist())),
                   "payload": policy.comm_bytes, "rounds": policy.comm_rounds,
                   "sent": policy.ledger.train.sent, "received": policy.ledger.train.received,
                   "up_size": up_size, "down_size": down_size}, f)
    dist_helpers.leave_process_group(finished=True)


@pytest.mark.slow
@pytest.mark.dist
def test_quantized_parameter_server_in_gloo(tmp_path):
    world = 3
    dist_helpers.spawn(ps_worker, world, str(tmp_path / "store"), str(tmp_path))
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]
    for r in results:
        # identity quantizer: Adam at the server on the mean gradient = Adam on every rank after an all-reduce
        assert torch.allclose(torch.tensor(r["identity"]), torch.tensor(r["reference"]), atol=1e-6)
        assert r["same_everywhere"]  # every rank holds the server's quantized weights
        assert r["levels"] <= 16  # the first layer's weights sit on a 4-bit grid
        assert r["payload"] == STEPS * r["up_size"] and r["rounds"] == STEPS
    server, *workers = results
    for w in workers:
        assert w["sent"] == STEPS * w["up_size"] and w["received"] == STEPS * w["down_size"]
    assert server["received"] == (world - 1) * STEPS * server["up_size"]
    assert server["sent"] == (world - 1) * STEPS * server["down_size"]


@pytest.mark.parametrize("options,message", [({"bits_up": 0}, "bits_up"), ({"bits_down": 33}, "bits_down"),
                                             ({"quantizer": "scaled-sign", "bits_up": 2}, "1 bit"),
                                             ({"quantizer": "topk"}, "quantizer"), ({"delta": 0.0}, "delta"),
                                             ({"quantizer": "scaled-sign", "stochastic": True}, "stochastic")])
def test_bad_settings_are_usage_errors(options, message):
    from repro import sync

    with pytest.raises(UsageError, match=message):
        sync.make("quantized-ps", **options)


def test_a_second_gradient_in_one_step_is_refused():
    from repro import sync

    model = torch.nn.Linear(3, 1)
    policy = sync.make("quantized-ps")
    policy.wrap(model)
    policy.before_step(model)
    for _ in range(2):
        model(torch.ones(2, 3)).sum().backward()
        if _ == 0:
            policy.on_gradients(model)
    with pytest.raises(UsageError, match="second gradient"):
        policy.on_gradients(model)
