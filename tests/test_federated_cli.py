"""Federated runs and the quantized parameter server through `repro run`: bad input is one line before any worker
starts; a federated run on two processes writes its emulated-clock rows and resumes from its checkpoint."""
import json

import pandas as pd
import pytest

from conftest import SHARED_DATA, run_repro

MNIST = SHARED_DATA / "mnist"
SMALL = ("--set", "train_subset=2000", "--set", "test_subset=500")


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("args, message", [
    (["--strategy", "fedbuff", "--strategy-opt", "c=20"], "fedbuff: c=20 is larger than the 10 clients"),
    (["--strategy", "fedfix", "--strategy-opt", "dt=0"], "dt (time between aggregations) must be > 0"),
    (["--strategy", "fedasync", "--strategy-opt", "spread=1.0"], "speed spread must be in [0, 1)"),
    (["--strategy", "fedasync", "--strategy-opt", "clients=2", "--machines", "3"], "3 worker processes for 2 clients"),
    (["--optimizer", "adam", "--sync", "quantized-ps", "--sync-opt", "bits_up=0"], "bits_up must be an integer from 1 to 32"),
    (["--optimizer", "adam", "--sync", "quantized-ps", "--sync-opt", "bits_down=33"], "bits_down must be an integer from 1 to 32"),
    (["--optimizer", "sgdol", "--sync", "quantized-ps"], "optimizer sgdol evaluates 2 gradients per step"),
])
def test_bad_federated_and_quantized_input_is_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "out"
    r = run_repro("run", "logreg-mnist", "--data-dir", MNIST, *args, "--out", out, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("repro: error: "), r.stderr
    assert message.lower() in r.stderr.lower()
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.data
def test_a_federated_run_on_two_processes(tmp_path):
    out = tmp_path / "out"
    r = run_repro("run", "logreg-mnist", "--data-dir", MNIST, "--strategy", "fedbuff", "--strategy-opt", "c=3",
                  "--strategy-opt", "horizon=4", "--strategy-opt", "eval_every=2", "--partition", "classes",
                  "--partition-opt", "k=1", "--machines", "2", *SMALL, "--quiet", "--out", out, cwd=tmp_path,
                  timeout=600)
    assert r.returncode == 0, r.stderr
    (run_dir,) = (out / "logreg-mnist").iterdir()
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert rows["emulated_time"].tolist() == [0.0, 2.0, 4.0]
    assert rows["status"].iloc[-1] == "finished"
    assert (rows["process_bytes"].diff().dropna() > 0).all() and (rows["emulated_bytes_up"] > 0).iloc[-1]
    assert rows["train_loss"].iloc[-1] < rows["train_loss"].iloc[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["participation"]) == 10 and sum(summary["participation"]) == rows["contributions"].iloc[-1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["strategy"]["name"] == "fedbuff" and config["strategy"]["options"]["c"] == 3
