"""Checkpoints and resume with real workers and real signals: a run stopped by SIGTERM and resumed writes the
same metrics.csv as an uninterrupted run (every column but wall_seconds)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import alive, descendants, run_repro

from repro import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.dist]

TINY = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet",
        "--machines", "2", "--epochs", "12"]
SETTINGS = {
    "clipped-sgd + periodic": ["--algo", "celgc", "--interval", "3"],
    "adamw + every-step": ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "1e-4", "--sync", "every-step"],
    "sgdol (two gradients per step)": ["--optimizer", "sgdol", "--sync", "every-step"],
}


def _run_dir(out):
    (run,) = (out / "lstm-text").iterdir()
    return run


def _rows(path):
    return pd.read_csv(path / "metrics.csv").drop(columns="wall_seconds")


@pytest.mark.parametrize("name", list(SETTINGS))
def test_sigterm_then_resume_gives_the_uninterrupted_metrics(tmp_path, tiny_corpus, name):
    args = ["run", "lstm-text", "--data-dir", str(tiny_corpus), *TINY, *SETTINGS[name]]
    whole = run_repro(*args, "--out", tmp_path / "whole", timeout=600)
    assert whole.returncode == 0, whole.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "repro", *args, "--out", str(tmp_path / "cut")],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        csv = list((tmp_path / "cut").glob("lstm-text/*/metrics.csv"))
        if csv and csv[0].read_text().count("\n") >= 3:  # two epochs logged (and checkpointed)
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    run = _run_dir(tmp_path / "cut")
    # 12 epochs, signalled after 2: a run that finished anyway (exit 0) fails here, it is never a pass
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"repro: interrupted by SIGTERM (after epoch \d+|at step \d+ in epoch \d+); resume with: "
                        rf"repro resume {re.escape(str(run))}", last), stderr
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    if "at step" in last:  # stopped between two steps: saved there
        step, epoch = map(int, re.search(r"at step (\d+) in epoch (\d+)", last).groups())
        assert (run / "checkpoints" / f"epoch{epoch - 1:05d}-step{step:09d}.pt").is_file()
    assert list((run / "checkpoints").glob("epoch*.pt"))

    resumed = run_repro("resume", run, "--quiet", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_rows(run), _rows(_run_dir(tmp_path / "whole")))
    config = json.loads((run / "config.json").read_text())
    assert len(config["resumes"]) == 1 and config["resumes"][0]["checkpoint"].startswith("epoch")
    assert json.loads((run / "status.json").read_text())["status"] == "done"


def test_a_run_killed_mid_epoch_resumes_from_its_newest_mid_epoch_checkpoint(tmp_path, tiny_corpus):
    """--checkpoint-minutes: checkpoints between epoch ends; the launcher killed with SIGKILL (no chance to save);
    the resumed run gives the metrics of a run that never checkpointed mid-epoch nor stopped."""
    args = ["run", "lstm-text", "--data-dir", str(tiny_corpus), *TINY, *SETTINGS["clipped-sgd + periodic"]]
    whole = run_repro(*args, "--out", tmp_path / "whole", timeout=600)
    assert whole.returncode == 0, whole.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "repro", *args, "--out", str(tmp_path / "cut"),
                             "--checkpoint-minutes", "0.001", "--keep-checkpoints", "1000"],
                            stderr=subprocess.DEVNULL, env=env)
    deadline, mid = time.monotonic() + 300, []
    while time.monotonic() < deadline and proc.poll() is None:
        mid = [p for p in (tmp_path / "cut").glob("lstm-text/*/checkpoints/epoch00002-step*.pt")  # inside epoch 3
               if checkpoint.NAME.match(p.name)]  # a checkpoint, not one rank's file of it
        if mid:
            break
        time.sleep(0.05)
    below = descendants(proc.pid)  # the forkserver and the workers
    proc.kill()  # SIGKILL: the workers end with it (PDEATHSIG); nothing is saved at the end
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in below) and time.monotonic() < deadline:  # a worker may finish one more save
        time.sleep(0.05)
    assert not any(alive(pid) for pid in below), "a worker outlived the killed launcher"
    assert mid, "no mid-epoch checkpoint was written"
    run = _run_dir(tmp_path / "cut")
    for path in (run / "checkpoints").glob("epoch*.pt"):  # resume from a mid-epoch one, as if killed right after it
        if path.name.split(".")[0] > mid[0].name.split(".")[0]:  # a later checkpoint or one of its rank files
            path.unlink()
    resumed = run_repro("resume", run, "--quiet", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_rows(run), _rows(_run_dir(tmp_path / "whole")))
    config = json.loads((run / "config.json").read_text())
    assert config["resumes"][0]["checkpoint"] == mid[0].name


def test_resume_refuses_bad_input(tmp_path, tiny_corpus):
    missing = run_repro("resume", tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stderr.startswith("repro: error: run folder")
    done = run_repro("run", "lstm-text", "--data-dir", tiny_corpus, *TINY[:-2], "--epochs", "1", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    run = _run_dir(tmp_path)
    complete = run_repro("resume", run)
    assert complete.returncode == 2 and "is complete: give a higher --epochs" in complete.stderr
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "version": 99}))
    other = run_repro("resume", run, "--epochs", "2")
    assert other.returncode == 2 and "another version of repro" in other.stderr
    (run / "config.json").write_text(json.dumps(config))
    extended = run_repro("resume", run, "--epochs", "2", "--quiet")  # a finished run, extended
    assert extended.returncode == 0, extended.stderr
    assert len(pd.read_csv(run / "metrics.csv")) == 2
    (next((run / "checkpoints").iterdir())).write_bytes(b"not a checkpoint")
    corrupt = run_repro("resume", run, "--epochs", "3")
    assert corrupt.returncode == 2 and corrupt.stderr.count("\n") == 1 and "unreadable" in corrupt.stderr


def test_a_rank_that_cannot_write_its_file_fails_the_save_and_keeps_the_previous_checkpoint(tmp_path, tiny_corpus):
    """Rank 1 (not the rank that writes the checkpoint's own file) cannot write its state: the run stops with one
    line naming that file, the checkpoint of the epoch before stays whole and resumable, and nothing names the
    failed epoch as saved."""
    done = run_repro("run", "lstm-text", "--data-dir", tiny_corpus, *TINY[:-2], "--epochs", "1", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    run = _run_dir(tmp_path)
    blocked = run / "checkpoints" / "epoch00002.rank00001.pt"
    blocked.mkdir()  # a directory where rank 1's file of epoch 2 goes: its rename fails
    failed = run_repro("resume", run, "--epochs", "2", "--quiet", timeout=600)
    assert failed.returncode != 0
    (line,) = failed.stderr.strip().splitlines()
    assert f"cannot write checkpoint {blocked}" in line and "the previous checkpoint is kept" in line, line
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert [p.name for p in checkpoint.existing(run)] == ["epoch00001.pt"]
    states = checkpoint.load(checkpoint.existing(run)[0], json.loads((run / "config.json").read_text())["identity"],
                             2, check_ranks=True)
    assert len(states["ranks"]) == 2
    blocked.rmdir()
    resumed = run_repro("resume", run, "--epochs", "2", "--quiet", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert len(pd.read_csv(run / "metrics.csv")) == 2
