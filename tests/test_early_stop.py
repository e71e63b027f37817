"""Ctrl-C before the workers have taken over: the command still says "interrupted" (exit 130), stops every process
it started, and leaves no run folder marked "running"."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import alive

TINY = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet"]


def test_a_ctrl_c_that_typer_turns_into_an_exit_code_is_not_success(monkeypatch):
    from repro import cli

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_args", stopped)
    monkeypatch.setattr(sys, "argv", ["repro", "run", "lstm-text"])
    assert cli._main() == 130


@pytest.mark.slow
def test_a_ctrl_c_while_the_launcher_is_forked_reaches_it(tmp_path):
    """The signal comes while the server is still forking the launcher (it ignores SIGINT until it is ready): it is
    passed on, and the launcher stops instead of running on without its parent."""
    script = tmp_path / "front.py"
    script.write_text(textwrap.dedent("""
        import os
        import sys
        import time

        def sleeper(path):
            with open(path + ".tmp", "w") as out:
                out.write(str(os.getpid()))
            os.replace(path + ".tmp", path)  # whole or absent, even if the Ctrl-C lands mid-write
            time.sleep(120)
            return 0

        if __name__ == "__main__":
            from repro import forkserver

            forkserver.start_early()
            try:  # as repro's front does: a Ctrl-C that this process itself takes is exit 130
                print("go", flush=True)
                sys.exit(forkserver.run_in_server_child(sleeper, sys.argv[1]))
            except KeyboardInterrupt:
                sys.exit(130)
    """))
    pid_file = tmp_path / "launcher.pid"
    proc = subprocess.Popen([sys.executable, str(script), str(pid_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "go"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
        proc.wait()
    if pid_file.exists():  # it had started: it must be gone too
        deadline = time.monotonic() + 10
        while alive(int(pid_file.read_text())) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(int(pid_file.read_text()))


@pytest.mark.slow
@pytest.mark.dist
def test_a_ctrl_c_as_the_run_folder_appears_leaves_nothing_marked_running(tmp_path, tiny_corpus):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "repro", "run", "lstm-text", "--machines", "2", "--epochs", "1000",
                             "--data-dir", str(tiny_corpus), "--out", str(out), *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("lstm-text/*/config.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("repro: interrupted by SIGINT"), stderr
    for run_dir in out.glob("lstm-text/*"):  # none (removed: no checkpoint yet), or one that can be resumed
        assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
        assert list((run_dir / "checkpoints").glob("*.pt")), "an interrupted run folder without a checkpoint"
