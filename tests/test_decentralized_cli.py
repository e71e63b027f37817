"""Bad input to decentralized and robust runs: one line on stderr, exit code 2, before any worker starts."""
import pytest

from conftest import run_repro

pytestmark = [pytest.mark.slow]

MNIST = ["run", "convnet-mnist", "--data-dir", "/nonexistent/mnist"]  # the settings are refused before the data


@pytest.mark.parametrize("args, message", [
    (MNIST + ["--machines", "5", "--sync", "gossip", "--sync-opt", "topology=torus"],
     "a torus needs a number of workers that factors into rows x cols"),
    (MNIST + ["--machines", "4", "--sync", "robust", "--sync-opt", "f=2"], "aggregator nna tolerates at most f = 1 of 4"),
    (MNIST + ["--machines", "4", "--sync", "robust", "--sync-opt", "aggregator=trimmed-mean", "--sync-opt", "f=2"],
     "aggregator trimmed-mean tolerates at most f = 1 of 4"),
    (MNIST + ["--machines", "4", "--sync", "robust", "--byzantine", "alie", "--byzantine-opt", "count=5"],
     "byzantine count=5: more faulty ranks than the run's 4 workers"),
    (["run", "lstm-ptb", "--machines", "4", "--sync", "robust", "--byzantine", "label-flip", "--byzantine-opt",
      "count=1"], "byzantine label-flip: task lstm-ptb has no labels to flip"),
    (MNIST + ["--machines", "4", "--sync", "every-step", "--byzantine", "sign-flip", "--byzantine-opt", "count=1"],
     "faulty workers act in the exchange of a robust sync policy; --sync every-step has none"),
    (MNIST + ["--machines", "4", "--partition", "dirichlet", "--partition-opt", "alpha=0"],
     "alpha must be a finite number > 0"),
    (MNIST + ["--machines", "4", "--sync", "robust", "--sync-opt", "aggregator=bulyan"], "unknown aggregator 'bulyan'"),
    (MNIST + ["--machines", "4", "--sync", "robust", "--byzantine", "empire"], "unknown byzantine behaviour 'empire'"),
    (MNIST + ["--machines", "4", "--algo", "dpsgd", "--sync-opt", "order=later"], "gossip order must be one of lian, atc"),
    (["run", "logreg-mnist", "--data-dir", "/nonexistent/mnist", "--machines", "2", "--sync", "robust", "--byzantine",
      "sign-flip", "--byzantine-opt", "count=1"], "not among federated clients (--strategy fedavg)"),
])
def test_bad_decentralized_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "out"
    r = run_repro(*args, "--out", out, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("repro: error: "), r.stderr
    assert message.lower() in r.stderr.lower()
    assert not out.exists()
