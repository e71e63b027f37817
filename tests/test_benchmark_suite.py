"""benchmarks/suite.py cannot rot silently: its /proc memory reader on real processes (fast), and one tiny section of
the suite end to end (slow). Timings are never asserted: they depend on the machine and its load."""
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    """benchmarks/ is no package: load the file (registered, as dataclasses need its module)."""
    spec = importlib.util.spec_from_file_location("repro_bench_suite", REPO / "benchmarks" / "suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_process_memory_reads_this_process(suite):
    before = suite.process_memory(os.getpid())
    assert before["peak_rss_kb"] >= before["rss_kb"] > 0 and before["pss_kb"] > 0
    block = bytearray(64 * 2**20)  # 64 MiB, touched (zero-filled) pages: resident and private
    block[::4096] = b"\1" * len(block[::4096])
    after = suite.process_memory(os.getpid())
    assert after["rss_kb"] - before["rss_kb"] > 50 * 1024
    assert after["pss_kb"] - before["pss_kb"] > 50 * 1024
    assert after["peak_rss_kb"] >= after["rss_kb"]
    del block
    assert suite.process_memory(2**22 + 12345) is None  # no such process: None, no exception


def test_copies_together_are_timed_over_their_common_span(suite):
    # Two copies start together; the second takes twice as long (it ran alone at the end): 200 samples in 20 s,
    # not the 15 samples/s their own rates add up to.
    copies = [{"started_at": 100.0, "seconds": 10.0, "samples": 100},
              {"started_at": 100.0, "seconds": 20.0, "samples": 100}]
    assert suite.together_samples_per_s(copies) == pytest.approx(10.0)
    late = [{"started_at": 101.0, "seconds": 19.0, "samples": 100}, copies[0]]  # starts 1 s late, ends with it
    assert suite.together_samples_per_s(late) == pytest.approx(200 / 20.0)


def test_tree_memory_follows_grandchildren(suite):
    # A child that starts a grandchild holding 80 MiB: the tree, its peak and the workers' fallback (no repro-rank
    # process: the root counts as the one worker) all come from /proc.
    grandchild = "b = bytearray(80 * 2**20); b[::4096] = b'1' * len(b[::4096]); import time; time.sleep(1.5)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    proc = subprocess.Popen([sys.executable, "-c", child])
    tree = suite.TreeMemory(proc.pid)
    seen = 0
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        seen = max(seen, len(suite.process_tree(proc.pid)))
        tree.sample()
        time.sleep(0.05)
    proc.wait(timeout=30)
    summary = tree.summary()
    assert seen == 2 and summary["processes"] == 2 and summary["workers"] == 1
    assert summary["total_sum_peak_rss_mb"] > 80
    assert summary["total_peak_pss_mb"] > 70
    assert suite.process_tree(proc.pid) == []  # ended: an empty tree


def test_arguments_quick_and_overrides(suite):
    args = suite.parse_args(["--quick", "--sections", "memory,startup", "--memory-workers", "1,8",
                             "--data-root", "/nowhere"])
    assert args.sections == ["memory", "startup"] and args.memory_workers == [1, 8]
    assert args.steps == suite.QUICK["steps"] and args.data_dir == Path("/nowhere/ptb")
    with pytest.raises(SystemExit):
        suite.parse_args(["--sections", "nonsense"])


@pytest.mark.slow
@pytest.mark.data
def test_suite_quick_overhead_section(tmp_path, fashion_mnist_dir):
    out = tmp_path / "suite.csv"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "suite.py"), "--quick", "--sections",
                             "overhead", "--tasks", "convnet-fashion-mnist", "--steps", "1",
                             "--fashion-mnist-dir", str(fashion_mnist_dir), "--csv", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== overhead ==" in result.stdout
    rows = list(csv.DictReader(open(out)))
    facts = {r["metric"]: r["value"] for r in rows if r["section"] == "machine"}
    assert facts["cpu_count"] and facts["torch"]
    (measured,) = [r for r in rows if r["metric"] == "repro samples/s"]
    assert measured["config"] == "convnet-fashion-mnist"
    assert float(measured["value"]) > 0 and float(measured["baseline"]) > 0 and float(measured["ratio"]) > 0


@pytest.mark.slow
@pytest.mark.data
def test_footprint_counts_the_step_it_takes(fashion_mnist_dir):
    """The memory goal's (model + optimizer state + activations) of one worker: parameters exactly, gradients of
    the same size, and activations that grow with the batch."""
    spec = importlib.util.spec_from_file_location("repro_bench_bare_loop", REPO / "benchmarks" / "bare_loop.py")
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    from repro.tasks.mnist import MNISTConvNet

    params = sum(p.numel() * 4 for p in MNISTConvNet().parameters()) / 2**20
    small = bare.footprint("convnet-fashion-mnist", str(fashion_mnist_dir), {"batch_size": 8})
    large = bare.footprint("convnet-fashion-mnist", str(fashion_mnist_dir), {"batch_size": 64})
    assert small["params_mb"] == pytest.approx(params) and small["grads_mb"] == pytest.approx(params)
    assert 0 < small["activations_mb"] < large["activations_mb"]
    assert large["total_mb"] == pytest.approx(sum(large[k] for k in ("params_mb", "grads_mb", "optimizer_state_mb",
                                                                       "activations_mb")))


@pytest.mark.slow
@pytest.mark.data
def test_bare_loop_follows_the_runs_trajectory(tmp_path, fashion_mnist_dir):
    """The overhead peer draws the very batches (and, for CIFAR, crops and flips) of a one-worker `repro run`:
    after the same steps both hold the same weights, so their speeds are of the same arithmetic (on CPU, the
    count of denormal numbers along a trajectory changes the speed). SGDOL's quick recipe: two fresh batches a step."""
    import torch

    from repro import checkpoint

    steps = 3
    subprocess.run([sys.executable, "-m", "repro", "run", "convnet-fashion-mnist", "--preset", "quick",
                    "--machines", "1", "--sync", "none", "--max-steps", str(steps), "--eval-batches", "1",
                    "--data-dir", str(fashion_mnist_dir), "--out", str(tmp_path), "--quiet"],
                   check=True, timeout=300, cwd=REPO)
    (saved,) = tmp_path.glob(f"*/*/checkpoints/*step{steps:09d}.pt")
    run_weights = checkpoint.load(saved)["ranks"][0]["model"]

    spec = importlib.util.spec_from_file_location("repro_bench_bare_loop", REPO / "benchmarks" / "bare_loop.py")
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    _, _, model, next_batch, loss_of, optimizer = bare.build_all("convnet-fashion-mnist", "quick",
                                                                 str(fashion_mnist_dir), {}, torch.device("cpu"))
    bare.train(model, next_batch, loss_of, optimizer, steps - 1, lambda batch: len(batch[1]), torch.device("cpu"))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, run_weights[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_bare_loop_copies_start_their_timed_steps_together(tmp_path, fashion_mnist_dir):
    """The speed-up section's ceiling: copies started seconds apart still time overlapping steps (the barrier)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "bare_loop.py"), "convnet-fashion-mnist", "--steps", "2",
           "--json", "--data-dir", str(fashion_mnist_dir), "--copies", "2", "--barrier", str(tmp_path / "meet")]
    env = {**os.environ, "REPRO_THREADS": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    time.sleep(4)  # longer than the 2 timed steps take
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    starts = [json.loads(out.strip().splitlines()[-1])["started_at"] for out in outputs]
    assert abs(starts[0] - starts[1]) < 1.0, starts


@pytest.mark.slow
@pytest.mark.data
def test_gpu_benchmark_counts_the_lstms_flops_and_runs_without_a_gpu(tmp_path):
    """benchmarks/gpu.py on the CPU (the GPU box is not always there): the paper AWD-LSTM's step is measured and its
    FLOPs include the LSTM's matmuls (cuDNN's fused LSTM would hide them from the counter on a GPU)."""
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "ptb").is_dir():
        pytest.fail(f"the offline PTB copy is missing: {SHARED_DATA / 'ptb'} (set REPRO_SHARED_DATA)")
    out = tmp_path / "gpu.csv"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--tasks", "lstm-ptb", "--switches",
                             "fp32", "--steps", "1", "--data-root", str(SHARED_DATA), "--csv", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = list(csv.DictReader(open(out)))
    assert row["task"] == "lstm-ptb" and row["switch"] == "fp32" and float(row["steps_per_s"]) > 0
    tokens, layers = 3 * 70, [(400, 1150), (1150, 1150), (1150, 400)]  # batch 3 x BPTT 70; (input, hidden) each
    lstm_forward = sum(2 * 4 * hidden * (inputs + hidden) for inputs, hidden in layers) * tokens
    assert float(row["gflops_per_step"]) * 1e9 > 3 * lstm_forward  # forward + backward (2x) at least
