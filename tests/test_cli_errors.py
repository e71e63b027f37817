"""Bad input: one line on stderr, exit code 2, nothing written."""
import os
import shutil

import pytest

from conftest import SHARED_DATA, run_repro

pytestmark = [pytest.mark.slow, pytest.mark.data]

PTB = SHARED_DATA / "ptb"


@pytest.mark.parametrize("args, message", [
    (["run", "no-such-task"], "unknown task 'no-such-task'"),
    (["run", "lstm-ptb", "--optimizer", "nope"], "unknown optimizer 'nope'"),
    (["run", "lstm-ptb", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "lstm-ptb", "--machines", "0"], "machines must be >= 1"),
    (["run", "lstm-ptb", "--interval", "0"], "interval must be >= 1"),
    (["run", "lstm-ptb", "--lr", "-1"], "lr must be a finite number >= 0"),
    (["run", "lstm-ptb", "--lr", "abc"], "Invalid value for '--lr'"),
    (["run", "lstm-ptb", "--algo", "magic"], "unknown algo 'magic'"),
    (["run", "lstm-ptb", "--eval-batches", "0"], "eval-batches must be >= 1"),
    (["run", "lstm-ptb", "--pairing", "same"], "pairing must be one of fresh-batch, same-batch"),
    (["run", "lstm-ptb", "--sync", "every-step", "--interval", "4"], "sync policy 'every-step' does not take interval"),
    (["run", "lstm-ptb", "--set", "colour=blue"], "task option(s) colour not known"),
    (["run", "lstm-ptb", "--data-dir", "/nonexistent/ptb"], "PTB not found in /nonexistent/ptb"),
    (["run", "lstm-ptb", "--tf32", "maybe"], "--tf32 takes on or off, got 'maybe'"),
    (["run", "lstm-ptb", "--from", "results/x"], "--from is no longer a flag of `repro run`: give the recorded run as TASK"),
    (["run", "lstm-ptb", "--run-opt", "nodes=2", "--run-opt", "node_rank=2"], "0 <= node_rank < nodes"),
    (["plot", "no-such-figure"], "unknown figure 'no-such-figure'"),
    (["sweep", "lstm-ptb", "--lr", "1,-2"], "lr must be a finite number >= 0"),
    # Usage errors the command-line parser finds (Typer/click's wording, whichever Typer is installed)
    (["run", "lstm-ptb", "--machines", "four"], "'--machines'"),
    (["run", "lstm-ptb", "--no-such-flag"], "--no-such-flag"),
    (["run"], "missing argument"),
    (["sweep"], "missing argument"),
    (["no-such-command"], "no-such-command"),
    (["sweep", "lstm-ptb", "--lr", "1,abc"], "Invalid value for '--lr'"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "out"
    r = run_repro(*args, "--out", out, cwd=tmp_path, env={"REPRO_PTB_DIR": str(PTB)}) if args[0] != "plot" \
        else run_repro(*args, "--results", tmp_path, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("repro: error: "), r.stderr
    assert message.lower() in r.stderr.lower()
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_checksum_mismatch(tmp_path):
    data = tmp_path / "ptb"
    shutil.copytree(PTB, data)
    os.chmod(data / "ptb.valid.txt", 0o644)
    with open(data / "ptb.valid.txt", "a") as f:
        f.write("tampered\n")
    out = tmp_path / "out"
    r = run_repro("run", "lstm-ptb", "--data-dir", data, "--out", out)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "ptb.valid.txt has md5" in r.stderr and "expected aa0affc06ff7c36e977d7cd49e3839bf" in r.stderr
    assert not out.exists()


def test_unwritable_output_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: make the target a file instead of a folder
            locked.chmod(0o700)
            locked.rmdir()
            locked.write_text("not a folder")
        r = run_repro("run", "lstm-ptb", "--data-dir", PTB, "--out", locked / "results")
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "cannot write to output directory" in r.stderr
    finally:
        if locked.is_dir():
            locked.chmod(0o700)


def test_help_lists_commands():
    r = run_repro("--help")
    assert r.returncode == 0
    for cmd in ("run", "sweep", "plot", "list"):
        assert cmd in r.stdout
    assert "--install-completion" in r.stdout  # Typer's shell completion is on


def test_no_arguments_shows_help():
    r = run_repro()
    assert r.returncode == 0 and "Usage" in r.stdout


def test_missing_data_offline_leaves_no_folder_behind(tmp_path):
    target = tmp_path / "nowhere" / "ptb"
    r = run_repro("run", "lstm-ptb", "--data-dir", target, "--out", tmp_path / "out",
                  env={"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"PTB not found in {target}" in r.stderr
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "out").exists()
