"""process_exit.exit_process: the exit handlers run, buffered output arrives, the code is the one given, and no
Python teardown follows (an object's finalizer that would run at interpreter shutdown does not)."""
import os
import subprocess
import sys
import textwrap


def test_exit_process_runs_exit_handlers_flushes_and_skips_teardown(tmp_path):
    script = textwrap.dedent(f"""
        import atexit, sys
        from pathlib import Path
        from repro.process_exit import exit_process

        class Finalized:
            def __del__(self):
                Path({str(tmp_path / "teardown")!r}).write_text("ran")

        kept = Finalized()  # a module global: collected only by the interpreter's teardown
        atexit.register(lambda: Path({str(tmp_path / "atexit")!r}).write_text("ran"))
        sys.stdout.write("buffered, no newline")
        sys.stderr.write("and on stderr")
        exit_process(3)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered into the pipe
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 3
    assert result.stdout == "buffered, no newline" and result.stderr == "and on stderr"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()
