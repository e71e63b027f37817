"""The emulated-cluster scale's runner (repro/emulated_cluster.py): each `repro run` command becomes one job of two
nodes in two network namespaces joined by the rate-limited link, arms one after the other; a tiny real run of each
arm, and what the report needs from it. Root only; skips, saying why, without root or iproute2."""
import json

import pytest

from conftest import unavailable
from repro import emulated_cluster
from repro.cli import _invoke_run

TINY = ["lstm-text", "--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4",
        "--max-steps", "4", "--machines", "2", "--run-opt", "nodes=2", "--run-opt", "quiet=true"]

pytestmark = [pytest.mark.slow, pytest.mark.dist]


def test_each_cell_runs_as_one_job_on_two_emulated_nodes(tmp_path, tiny_corpus):
    reason = emulated_cluster.unavailable()
    if reason:
        unavailable(reason)
    out = tmp_path / "results"
    argvs = [[*TINY, "--data-dir", str(tiny_corpus), *algo, "--seed", "0", "--out", str(out)]
             for algo in (["--algo", "naive-parallel-clip"], ["--algo", "celgc", "--interval", "2"])]
    said = []
    failed = emulated_cluster.run_cells(argvs, validate=lambda argv: _invoke_run([*argv, "--validate-only"]),
                                        echo=said.append)
    assert failed == 0, said
    runs = sorted((out / "lstm-text").iterdir())
    assert len(runs) == 2, said
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["world_size"] == 4  # 2 nodes x 2 workers: one job
        cluster = json.loads((run / "emulated_cluster.json").read_text())
        assert cluster["link_rate"] == emulated_cluster.LINK_RATE == "100mbit" and cluster["nodes"] == 2
    syncs = {json.loads((r / "config.json").read_text())["sync"]["name"] for r in runs}
    assert syncs == {"every-step", "periodic"}
    # a cell that fails (no corpus there) is counted and said
    bad = [[*TINY, "--data-dir", str(tmp_path / "missing"), "--seed", "0", "--out", str(out)]]
    said.clear()
    assert emulated_cluster.run_cells(bad, validate=lambda argv: None, echo=said.append) == 1
    assert said and said[-1].startswith("failed (exit")
