"""Start N worker processes per node through PyTorch's elastic launcher (the engine behind torchrun)."""
from __future__ import annotations

import logging
import os
import socket
import uuid

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from repro.worker import run_worker


class WorkersFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(spec: dict, machines: int, nodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1",
           master_port: int | None = None) -> dict:
    """Run ``run_worker(spec)`` in ``machines`` processes on this node (world size = nodes x machines);
    returns global rank 0's result (on node 0)."""
    if master_port is None:
        master_port = free_port() if nodes == 1 else 29500
    # Workers inherit the environment: one thread each by default so N workers do not thrash the cores;
    # run_worker then sets torch's thread count to cores // local workers.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // machines)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    config = LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=machines,
        run_id=f"repro-{master_port}" if nodes > 1 else f"repro-{uuid.uuid4().hex[:8]}",
        rdzv_backend="static", rdzv_endpoint=f"{master_addr}:{master_port}", rdzv_configs={"rank": node_rank},
        max_restarts=0, monitor_interval=0.1, start_method="spawn",
    )
    try:
        results = elastic_launch(config, run_worker)(spec)
    except ChildFailedError as e:
        rank, first = min(e.failures.items())  # keyed by global rank (ProcessFailure has local_rank only)
        raise WorkersFailed(f"worker rank {rank} failed (exit code {first.exitcode}); see its traceback above") from None
    return results.get(0, {}) if results else {}
