"""End-to-end `repro run` / `repro sweep` with real worker processes (gloo) on a tiny corpus."""
import pytest
import json
import math

import pandas as pd

from conftest import run_repro

pytestmark = [pytest.mark.slow, pytest.mark.dist]

TINY = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet"]


def _only_run(out, task="lstm-text"):
    runs = sorted((out / task).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _n_params(corpus_dir):
    from repro.tasks.awd_lstm import RNNModel
    from repro.tasks.corpus import CORPORA, Corpus

    ntok = len(Corpus(corpus_dir, CORPORA["text"]).dictionary)
    return sum(p.numel() for p in RNNModel(ntok, 16, 16, 2, tie_weights=True).parameters())


def test_periodic_run_counts_rounds_and_bytes_and_evaluation_apart(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    r = run_repro("run", "lstm-text", "--machines", 2, "--algo", "celgc", "--interval", 4, "--max-steps", 10,
                  "--data-dir", tiny_corpus, "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    run_dir = _only_run(out)
    rows = pd.read_csv(run_dir / "metrics.csv")
    last = rows.iloc[-1]
    model_bytes = _n_params(tiny_corpus) * 4
    assert last["iteration"] == 10 and last["status"] == "done"
    assert last["comm_rounds"] == 10 // 4  # after steps 4 and 8: evaluation adds no round to the algorithm's
    assert last["comm_bytes"] == last["comm_rounds"] * model_bytes
    assert last["eval_comm_rounds"] == 1 and last["eval_comm_bytes"] == model_bytes  # the average, into a copy
    assert last["worker_spread"] > 0.0  # two local steps since the last average: the training models differ
    assert math.isfinite(last["test_ppl"]) and math.isfinite(last["val_ppl"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world_size"] == 2 and config["sync"] == {"name": "periodic", "options": {"interval": 4}}
    assert config["optimizer"]["name"] == "clipped-sgd"
    for key in ("torch", "python", "hostname", "git_commit", "command"):
        assert key in config["environment"]
    assert (run_dir / "summary.json").exists()


def test_in_place_evaluation_averages_the_training_models_as_the_authors_lm_code(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    r = run_repro("run", "lstm-text", "--machines", 2, "--algo", "celgc", "--interval", 4, "--max-steps", 10,
                  "--eval-sync", "in-place", "--data-dir", tiny_corpus, "--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    last = pd.read_csv(_only_run(out) / "metrics.csv").iloc[-1]
    assert last["comm_rounds"] == math.ceil(10 / 4)  # steps 4 and 8, then the evaluation's own average
    assert last["eval_comm_rounds"] == 0


def test_every_step_run_communicates_every_iteration(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    r = run_repro("run", "lstm-text", "--machines", 2, "--optimizer", "clipped-sgd", "--sync", "every-step",
                  "--max-steps", 7, "--data-dir", tiny_corpus, "--out", out, *(a for a in TINY if a != "--quiet"))
    assert r.returncode == 0, r.stderr
    # the start names the recipe the default preset resolved to (its values fill every flag not given)
    assert "recipe celgc-lm-quick: " in r.stderr
    last = pd.read_csv(_only_run(out) / "metrics.csv").iloc[-1]
    assert last["comm_rounds"] == 7
    assert last["comm_bytes"] == 7 * _n_params(tiny_corpus) * 4
    assert last["worker_spread"] == 0.0


def test_full_epochs_log_one_row_each_and_repeat_runs_never_overwrite(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    args = ["run", "lstm-text", "--machines", 2, "--algo", "local-sgd", "--lr", 1.0, "--interval", 2,
            "--epochs", 2, "--data-dir", tiny_corpus, "--out", out, *TINY]
    assert run_repro(*args).returncode == 0
    first = _only_run(out)
    rows = pd.read_csv(first / "metrics.csv")
    assert list(rows["epoch"].round(1)) == [1.0, 2.0]  # fractional: batchify trims a few tokens
    assert rows["test_ppl"].notna().all()  # test perplexity every epoch, as the authors log it
    before = (first / "metrics.csv").read_bytes()
    assert run_repro(*args).returncode == 0
    runs = sorted((out / "lstm-text").iterdir())
    assert len(runs) == 2 and runs[0] == first and runs[1].name == first.name + "-r2"
    assert (first / "metrics.csv").read_bytes() == before

    # local-sgd runs are not clipped-sgd runs: the CELGC figure says so in one line
    r = run_repro("plot", "celgc-lm", "--results", out)
    assert r.returncode == 2 and "no clipped-sgd language-model runs" in r.stderr


def test_plot_draws_one_curve_per_interval_plus_baseline(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    for algo in (["--algo", "celgc", "--interval", "2"], ["--algo", "naive-parallel-clip"]):
        r = run_repro("run", "lstm-text", "--machines", 2, *algo, "--epochs", 1, "--data-dir", tiny_corpus,
                      "--out", out, *TINY)
        assert r.returncode == 0, r.stderr
    r = run_repro("plot", "celgc-lm", "--results", out)
    assert r.returncode == 0, r.stderr
    figures = out / "figures"
    for ext in ("png", "pdf", "csv"):
        assert (figures / f"celgc-lm_lstm-text_quick_N2.{ext}").stat().st_size > 0
    table = pd.read_csv(figures / "celgc-lm_lstm-text_quick_N2.csv")
    assert list(table["curve"]) == ["every-step (naive parallel)", "I=2"]
    assert table["comm_rounds"].iloc[0] > table["comm_rounds"].iloc[1]  # averaging every 2 steps talks less


def test_sweep_runs_the_product_and_skips_completed(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    args = ["sweep", "lstm-text", "--machines", 1, "--interval", "1,3", "--lr", "0.5,1", "--max-steps", 3,
            "--data-dir", tiny_corpus, "--out", out, *TINY]
    r = run_repro(*args)
    assert r.returncode == 0, r.stderr
    runs = sorted((out / "lstm-text").iterdir())
    assert len(runs) == 4
    assert {json.loads((d / "config.json").read_text())["sync"]["options"]["interval"] for d in runs} == {1, 3}
    r = run_repro(*args)
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] == "sweep: 0 done, 0 failed, 4 skipped"
    assert len(list((out / "lstm-text").iterdir())) == 4


def test_two_nodes_on_one_machine_form_one_job(tmp_path, tiny_corpus):
    """Two `repro run` commands as node 0 and node 1 of one job (`--run-opt nodes=2 node_rank=i master_port=P`):
    world size = 2 x workers per node."""
    import socket
    import subprocess
    import sys
    import os

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "results"
    common = ["-m", "repro", "run", "lstm-text", "--machines", "1", "--run-opt", "nodes=2",
              "--run-opt", f"master_port={port}", "--algo", "celgc", "--interval", "2", "--max-steps", "4",
              "--data-dir", str(tiny_corpus), "--out", str(out), *map(str, TINY)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, *common, "--run-opt", f"node_rank={rank}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    run_dir = _only_run(out)  # only node 0 (global rank 0) writes logs
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    last = pd.read_csv(run_dir / "metrics.csv").iloc[-1]
    assert last["comm_rounds"] == 2 and last["worker_spread"] == 0.0


def test_gpu_switches_are_recorded_and_a_compiled_step_runs_on_the_cpu(tmp_path, tiny_corpus):
    out = tmp_path / "results"
    r = run_repro("run", "lstm-text", "--machines", 1, "--algo", "celgc", "--max-steps", 1, "--tf32", "on",
                  "--deterministic", "--compile", "--data-dir", tiny_corpus, "--out", out, *TINY, timeout=600)
    assert r.returncode == 0, r.stderr
    run = _only_run(out)
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["tf32"], train["deterministic"], train["compile"]) == (True, True, True)
    assert pd.read_csv(run / "metrics.csv").iloc[-1]["iteration"] == 1
