"""Where this process stands in a job: started by `torchrun` or by a multi-task `srun` (then it joins as one rank
instead of spawning workers), and the Slurm facts a multi-node run derives its rendezvous from.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and TORCHELASTIC_RUN_ID);
srun sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_STEP_NODELIST, SLURM_JOB_ID. Both are turned into the
torch.distributed environment (env://), the port derived from the job id so two jobs on one head node differ.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

PORT_BASE, PORT_SPAN = 20000, 20000  # ports 20000-39999, chosen by job id


@dataclass(frozen=True)
class Placement:
    rank: int
    world: int
    local_rank: int
    local_world: int
    master_addr: str
    master_port: int
    run_id: str
    source: str  # "torchrun" or "slurm"

    @property
    def nodes(self) -> int:
        return max(1, self.world // self.local_world)

    def export(self) -> None:
        """Set the env:// rendezvous variables torch.distributed reads."""
        os.environ.update(RANK=str(self.rank), WORLD_SIZE=str(self.world), LOCAL_RANK=str(self.local_rank),
                          LOCAL_WORLD_SIZE=str(self.local_world), MASTER_ADDR=self.master_addr,
                          MASTER_PORT=str(self.master_port))


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (`node[03-05,07],gpu1` -> node03), via scontrol when present."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if match is None:
        return nodelist
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def job_port(job_id: str | int) -> int:
    return PORT_BASE + int(job_id) % PORT_SPAN


def outside_launcher(environ=os.environ) -> Placement | None:
    """This process's place when an outside launcher started one process per worker; None when repro should
    spawn its own workers (a plain shell, or a one-task Slurm step)."""
    if "TORCHELASTIC_RUN_ID" in environ or {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= set(environ):
        world = int(environ.get("WORLD_SIZE", 1))
        return Placement(int(environ.get("RANK", 0)), world, int(environ.get("LOCAL_RANK", 0)),
                         int(environ.get("LOCAL_WORLD_SIZE", world)), environ.get("MASTER_ADDR", "127.0.0.1"),
                         int(environ.get("MASTER_PORT", 29500)), environ.get("TORCHELASTIC_RUN_ID", "torchrun"),
                         "torchrun")
    ntasks = int(environ.get("SLURM_NTASKS", environ.get("SLURM_NPROCS", "1")) or 1)
    if "SLURM_PROCID" in environ and "SLURM_STEP_ID" in environ and ntasks > 1:
        nodes = int(environ.get("SLURM_STEP_NUM_NODES", environ.get("SLURM_NNODES", "1")))
        job = environ.get("SLURM_JOB_ID", "0")
        return Placement(int(environ["SLURM_PROCID"]), ntasks, int(environ.get("SLURM_LOCALID", 0)),
                         max(1, ntasks // max(1, nodes)),
                         first_host(environ.get("SLURM_STEP_NODELIST", environ.get("SLURM_NODELIST", "127.0.0.1"))),
                         int(environ.get("REPRO_MASTER_PORT", job_port(job))), f"slurm-{job}", "slurm")
    return None


def slurm_nodes(environ=os.environ) -> dict | None:
    """The rendezvous (`--run-opt` nodes, node_rank, master_addr, master_port) for `repro run` started once per node
    by srun (a step with one task per node, each task spawning its --machines workers)."""
    nodes = int(environ.get("SLURM_STEP_NUM_NODES", "1"))
    if "SLURM_STEP_ID" not in environ or environ.get("SLURM_STEP_NUM_TASKS") != str(nodes) or nodes < 2:
        return None
    return {"nodes": nodes, "node_rank": int(environ["SLURM_PROCID"]),
            "master_addr": first_host(environ.get("SLURM_STEP_NODELIST", "")),
            "master_port": int(environ.get("REPRO_MASTER_PORT", job_port(environ.get("SLURM_JOB_ID", "0")))),
            "run_id": f"slurm-{environ.get('SLURM_JOB_ID', '0')}"}
