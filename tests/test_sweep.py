"""`repro sweep`: shards that partition the grid, device groups per job slot, and cells run K at a time."""
import json
import subprocess
import sys

import pytest

from conftest import run_repro
from repro.errors import UsageError
from repro.sweep import asks_quiet, device_groups, parse_grid, parse_shard


def test_shards_partition_the_grid():
    cells = parse_grid("lstm-text", ["--lr", "1,2,3", "--interval", "2,4,8,16", "--quiet"])
    assert len(cells) == 12 and cells[0] == ["lstm-text", "--lr", "1", "--interval", "2", "--quiet"]
    for count in (1, 3, 4, 5, 12, 13):
        slices = [cells[i::count] for i in (parse_shard(f"{i}/{count}")[0] for i in range(count))]
        flat = [tuple(c) for s in slices for c in s]
        assert sorted(flat) == sorted(map(tuple, cells)) and len(set(flat)) == len(flat)


def test_a_quiet_sweep_is_asked_for_in_the_generic_form_or_the_old_one():
    assert asks_quiet(["t", "--run-opt", "quiet=true"]) and asks_quiet(["t", "--quiet"]) and asks_quiet(["t", "-q"])
    assert not asks_quiet(["t", "--set", "quiet=true"]) and not asks_quiet(["t", "--run-opt", "quiet=false"])
    (cell,) = parse_grid("t", ["--run-opt", "quiet=true"])  # a one-value axis: every cell passes it on
    assert cell == ["t", "--run-opt", "quiet=true"]


def test_shard_from_a_slurm_array_and_bad_shards():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}
    assert parse_shard(None, env) == (2, 4)
    assert parse_shard(None, {}) == (0, 1)
    for bad in ("4/4", "-1/2", "a/b", "1"):
        with pytest.raises(UsageError, match="--shard expects"):
            parse_shard(bad)


def test_gpus_are_dealt_into_disjoint_groups_and_cpu_cores_shared():
    assert [g["CUDA_VISIBLE_DEVICES"] for g in device_groups(2, [0, 1, 2, 3])] == ["0,2", "1,3"]
    assert [g["CUDA_VISIBLE_DEVICES"] for g in device_groups(4, [0, 1, 2, 3])] == ["0", "1", "2", "3"]
    with pytest.raises(UsageError, match="needs at least 3 GPUs"):
        device_groups(3, [0, 1])
    cpu = device_groups(2, [])
    assert all(g["CUDA_VISIBLE_DEVICES"] == "" and int(g["REPRO_THREADS"]) >= 1 for g in cpu)


def test_a_job_slot_gets_the_cores_the_process_may_use_not_the_machines():
    # Slurm's cpuset, taskset or a container confine a process to fewer cores than os.cpu_count() reports; the
    # child confines itself to one core, as taskset -c would.
    probe = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
             "from repro.sweep import device_groups; print(device_groups(1, [])[0]['REPRO_THREADS'])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.slow
@pytest.mark.dist
def test_parallel_sweep_runs_cells_at_once_and_a_failed_cell_does_not_stop_the_others(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    common = ["--machines", "2", "--max-steps", "2", "--data-dir", tiny_corpus, "--set", "nhid=16",
              "--set", "bptt=5", "--batch-size", "4", "--out", out, "--quiet"]
    # emsize -1 passes validation but every worker fails building the model: that cell fails, the others run.
    r = run_repro("sweep", "lstm-text", "--set", "emsize=16,-1", "--lr", "1,2", "--jobs", "2", *common, timeout=600)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "sweep: 2 done, 2 failed"
    finished = [line.split()[:2] for line in r.stderr.splitlines() if line[:1] == "[" and "/4]" in line]
    assert [n for n, _ in finished] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]  # one line per finished cell
    assert sorted(outcome for _, outcome in finished) == ["done", "done", "failed", "failed"]
    done = [json.loads((d / "summary.json").read_text())["status"] for d in (out / "lstm-text").iterdir()
            if (d / "summary.json").exists()]
    assert done == ["done", "done"]
    again = run_repro("sweep", "lstm-text", "--set", "emsize=16", "--lr", "1,2", "--jobs", "2", *common)
    assert again.returncode == 0 and again.stderr.strip().splitlines()[-1] == "sweep: 0 done, 0 failed, 2 skipped"


@pytest.mark.slow
@pytest.mark.dist
def test_two_sweeps_over_one_grid_never_run_a_cell_twice(tmp_path, tiny_corpus):
    import os
    import subprocess
    import sys

    out = tmp_path / "results"
    args = [sys.executable, "-m", "repro", "sweep", "lstm-text", "--lr", "1,2,3", "--machines", "1", "--epochs", "1",
            "--data-dir", str(tiny_corpus), "--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5",
            "--batch-size", "4", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweeps = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[1] for p in sweeps]
    assert all(p.returncode == 0 for p in sweeps), outputs
    runs = list((out / "lstm-text").iterdir())
    lrs = sorted(json.loads((d / "config.json").read_text())["optimizer"]["hparams"]["lr"] for d in runs)
    assert lrs == [1, 2, 3], outputs  # every cell exactly once, whichever sweep ran it
    done = sum(int(o.strip().splitlines()[-1].split()[1]) for o in outputs)
    assert done == 3, outputs
