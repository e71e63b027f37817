"""Joining an outside launcher: torchrun (real processes) and the Slurm environment (as srun sets it)."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import run_repro
from repro.cluster import first_host, job_port, outside_launcher, slurm_nodes

TINY = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet",
        "--max-steps", "4", "--algo", "celgc", "--interval", "2"]


def test_slurm_task_environment_gives_rank_world_and_a_per_job_rendezvous():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
           "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}
    p = outside_launcher(env)
    assert (p.rank, p.world, p.local_rank, p.local_world, p.nodes) == (3, 4, 1, 2, 2)
    assert p.master_addr == "gpu07" and p.master_port == job_port(123456) and p.run_id == "slurm-123456"
    assert job_port(1) != job_port(2)
    one_task = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "9"}
    assert outside_launcher(one_task) is None and outside_launcher({}) is None


def test_first_host_of_node_lists():
    assert first_host("node[03-05,07],gpu1") == "node03"
    assert first_host("single") == "single"


def test_one_run_per_node_under_srun_takes_the_rendezvous_from_the_job():
    env = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "2",
           "SLURM_PROCID": "1", "SLURM_STEP_NODELIST": "n[1-2]"}
    assert slurm_nodes(env) == {"nodes": 2, "node_rank": 1, "master_addr": "n1", "master_port": job_port(77),
                                "run_id": "slurm-77"}
    assert slurm_nodes({**env, "SLURM_STEP_NUM_TASKS": "8"}) is None  # one task per worker: join instead
    assert slurm_nodes({"SLURM_JOB_ID": "77", "SLURM_NNODES": "2", "SLURM_NODEID": "0"}) is None  # not in srun


def torchrun(*args, cwd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "repro",
                           *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


@pytest.mark.slow
@pytest.mark.dist
def test_under_torchrun_each_process_joins_as_a_rank_and_matches_the_spawned_run(tmp_path, tiny_corpus):
    joined, spawned = tmp_path / "joined", tmp_path / "spawned"
    r = torchrun("run", "lstm-text", "--data-dir", tiny_corpus, "--out", joined, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((joined / "lstm-text").iterdir())
    assert len(runs) == 1  # one run folder, not one per process, and no 2 x 2 workers
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["world_size"] == 2 and config["train"]["machines"] == 2
    s = run_repro("run", "lstm-text", "--machines", 2, "--data-dir", tiny_corpus, "--out", spawned, *TINY)
    assert s.returncode == 0, s.stderr
    a = pd.read_csv(runs[0] / "metrics.csv").drop(columns="wall_seconds")
    b = pd.read_csv(next((spawned / "lstm-text").iterdir()) / "metrics.csv").drop(columns="wall_seconds")
    pd.testing.assert_frame_equal(a, b)
    again = torchrun("run", "lstm-text", "--data-dir", tiny_corpus, "--out", joined, *TINY, "--skip-completed",
                     cwd=tmp_path)
    assert again.returncode == 0 and "(completed)" in again.stderr
    assert len(list((joined / "lstm-text").iterdir())) == 1
