"""Worker functions for the multi-process tests (importable by spawned children)."""
import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from repro import forkserver
from repro.process_exit import exit_process
from repro.worker import leave_process_group


def spawn(fn, world: int, *args) -> None:
    """``fn(rank, world, *args)`` in ``world`` new processes, forked from the launcher's forkserver (started once per
    test session, torch imported there once) as the launcher's workers are. Each ends through ``exit_process``, as
    theirs do: torch 2.15 sometimes aborts in C++ teardown after a gloo process finished."""
    mp.start_processes(_run_then_exit, args=(fn, world, *args), nprocs=world, join=True,
                       start_method=forkserver.start_method())


def _run_then_exit(rank: int, fn, world: int, *args) -> None:
    fn(rank, world, *args)  # an exception propagates: start_processes reports it with its traceback
    exit_process(0)


def init(rank: int, world: int, store_file: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)


def tiny_model(rank: int) -> torch.nn.Module:
    torch.manual_seed(rank)  # every worker starts from different weights unless broadcast
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def spread(model: torch.nn.Module) -> float:
    """Largest difference of any parameter or float buffer between any two workers."""
    from repro.sync import float_state

    flat = torch.cat([t.detach().reshape(-1) for t in float_state(model)])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max())


def periodic_worker(rank: int, world: int, store_file: str, out_dir: str, interval: int, steps: int) -> None:
    from repro import sync

    init(rank, world, store_file)
    model = tiny_model(rank)
    policy = sync.make("periodic", interval=interval)
    storage = [t.data_ptr() for t in sync.float_state(model)]
    spreads = []
    for _ in range(steps):
        with torch.no_grad():  # a "local step" that differs per worker, buffers included
            for t in sync.float_state(model):
                t.add_(0.01 * (rank + 1))
        policy.after_step(model)
        spreads.append(spread(model))
    policy.synchronize(model)
    final = spread(model)
    numel = sum(t.numel() for t in sync.float_state(model))
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"spreads": spreads, "final": final, "rounds": policy.comm_rounds, "bytes": policy.comm_bytes,
                   "numel": numel, "in_place": storage == [t.data_ptr() for t in sync.float_state(model)]}, f)
    leave_process_group(finished=True)


def every_step_worker(rank: int, world: int, store_file: str, out_dir: str, steps: int) -> None:
    from repro import optim, sync

    init(rank, world, store_file)
    model = tiny_model(rank)
    sync.broadcast_model(model)
    policy = sync.make("every-step")
    opt = optim.make("clipped-sgd", model.parameters(), lr=0.5, clip=0.1)
    gen = torch.Generator().manual_seed(100 + rank)  # each worker its own data
    grads_equal = []
    for _ in range(steps):
        x, y = torch.randn(8, 3, generator=gen), torch.randn(8, 2, generator=gen)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            policy.on_gradients(model)
            return loss

        opt.step(closure)
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        gathered = [torch.zeros_like(g) for _ in range(world)]
        dist.all_gather(gathered, g)
        grads_equal.append(all(torch.equal(gathered[0], h) for h in gathered))
        policy.after_step(model)
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"grads_equal": grads_equal, "params": params.tolist(), "rounds": policy.comm_rounds, "bytes": policy.comm_bytes,
                   "n_params": params.numel()}, f)
    leave_process_group(finished=True)


def broadcast_worker(rank: int, world: int, store_file: str, out_dir: str) -> None:
    """broadcast_model on workers that built the same model, then on workers that differ in one buffer element."""
    from repro import sync

    init(rank, world, store_file)
    same = tiny_model(0)  # one seed everywhere
    made_same = sync.broadcast_model(same)
    differ = tiny_model(0)
    if rank == world - 1:
        differ[1].running_var[2] += 1e-6  # one float32 ulp-scale difference in one buffer of the last worker
    made_differ = sync.broadcast_model(differ)
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"made_same": made_same, "made_differ": made_differ, "spread_same": spread(same),
                   "spread_differ": spread(differ), "first": float(differ[1].running_var[2])}, f)
    leave_process_group(finished=True)


def spread_worker(rank: int, world: int, store_file: str, out_dir: str) -> None:
    """trainer.worker_spread on identical models, then on models that differ in one parameter and one buffer."""
    from repro.trainer import worker_spread

    init(rank, world, store_file)
    model = tiny_model(0)
    same = worker_spread(model)
    with torch.no_grad():
        model[0].weight[1, 2] += 0.25 * rank  # exact in float32
        model[1].running_mean[3] -= 0.5 * rank
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"same": same, "differ": worker_spread(model)}, f)
    leave_process_group(finished=True)
