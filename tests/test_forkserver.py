"""The workers' forkserver (repro/forkserver.py): a worker forked from it shares the server's imported torch, a full
garbage collection in the worker does not copy those pages (gc.freeze in the server), and the server ends silently."""
import json
import os
import subprocess
import sys
import textwrap

import pytest


def run_in_forked_worker(tmp_path, measure: str) -> subprocess.CompletedProcess:
    """Runs ``measure(queue)`` (source defining it) in a worker forked from repro's server, prints what it puts on the
    queue, then stops the server the way it ends after a run (it reads EOF, tears down, exits)."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(measure) + textwrap.dedent("""
        if __name__ == "__main__":
            import multiprocessing
            import multiprocessing.forkserver

            from repro import forkserver

            context = multiprocessing.get_context(forkserver.start_method())
            queue = context.Queue()
            worker = context.Process(target=measure, args=(queue,))
            worker.start()
            print(*queue.get())
            worker.join()
            multiprocessing.forkserver._forkserver._stop()
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_a_workers_garbage_collection_leaves_the_servers_pages_shared(tmp_path):
    result = run_in_forked_worker(tmp_path, """
        import gc

        def private_dirty_mb():
            for line in open("/proc/self/smaps_rollup"):
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1]) / 1024

        def measure(queue):
            before = private_dirty_mb()
            gc.collect()  # a full collection, as a training loop makes sooner or later
            queue.put((gc.get_freeze_count(), private_dirty_mb() - before))
    """)
    frozen, copied_mb = result.stdout.split()
    assert float(copied_mb) < 20  # ~80 MB copied into every worker without the freeze
    assert int(frozen) > 100_000  # torch's objects, frozen in the server
    # the server's own end is silent: frozen objects outliving its teardown make nanobind extensions (torch 2.15's
    # triton) print "leaked instances"
    assert result.stderr == ""


LAUNCHER = """
import atexit
import sys

if __name__ == "__main__":
    atexit.register(lambda: print("launcher imported torch:", "torch" in sys.modules, file=sys.stderr))
    sys.argv = ["repro", *sys.argv[1:]]
    from repro.cli import main

    main()
"""


def _launch(tmp_path, *args):
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
@pytest.mark.dist
def test_the_launcher_of_several_workers_never_imports_torch(tmp_path, tiny_corpus):
    """Its torch work runs in a child of the workers' server (whose import of torch every worker shares); a second
    import would cost ~300 MB of private memory. The run is whole; a usage error found there is still one line."""
    tiny = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet"]
    done = _launch(tmp_path, "run", "lstm-text", "--machines", 2, "--max-steps", 4, "--data-dir", tiny_corpus,
                   "--out", tmp_path / "out", *tiny)
    assert done.returncode == 0, done.stderr
    assert "launcher imported torch: False" in done.stderr
    (run_dir,) = (tmp_path / "out" / "lstm-text").iterdir()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2

    wrong = _launch(tmp_path, "run", "lstm-text", "--machines", 2, "--set", "no_such_option=1",
                    "--data-dir", tiny_corpus, "--out", tmp_path / "out")
    assert wrong.returncode == 2, wrong.stderr
    assert "launcher imported torch: False" in wrong.stderr
    errors = [line for line in wrong.stderr.splitlines() if not line.startswith("launcher imported")]
    assert len(errors) == 1 and errors[0].startswith("repro: error:") and "no_such_option" in errors[0], wrong.stderr

    alone = _launch(tmp_path, "run", "lstm-text", "--machines", 1, "--max-steps", 2, "--data-dir", tiny_corpus,
                    "--out", tmp_path / "one", *tiny)
    assert alone.returncode == 0 and "launcher imported torch: True" in alone.stderr  # one worker runs in it
