"""Two `repro run` nodes on two emulated machines: network namespaces joined by a 100 Mbit/s veth pair (tests/netns.py).

Unlike tests/test_run_cli.py's two nodes on loopback, the nodes here reach each other only through their own
addresses (10.77.0.1, 10.77.0.2), so the rendezvous, node 0's decision store and gloo's mesh must all work across
"machines". Root only; skips, saying why, without root or iproute2 (`apt-get install iproute2`).
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import unavailable

import netns

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet"]
PORT = 29500  # the namespaces are new, so no port in them is taken

pytestmark = [pytest.mark.slow, pytest.mark.dist]


@pytest.fixture
def nodes():
    reason = netns.unavailable()
    if reason:
        unavailable(reason)
    pair = netns.NodePair(rate="100mbit")
    try:
        pair.create()
    except netns.NetnsError as e:
        pair.close()
        unavailable(f"cannot build two network namespaces here: {e}")
    yield pair
    pair.close()


def test_two_namespaced_nodes_form_one_job(nodes, tmp_path, tiny_corpus):
    outs = [tmp_path / "node0", tmp_path / "node1"]
    env = {**netns.clean_environment(), "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in (0, 1):
        argv = [sys.executable, "-m", "repro", "run", "lstm-text", "--machines", "2", "--nodes", "2",
                "--node-rank", str(rank), "--master-addr", nodes.addresses[0], "--master-port", str(PORT),
                "--algo", "celgc", "--interval", "2", "--max-steps", "3", "--data-dir", str(tiny_corpus),
                *TINY, "--out", str(outs[rank])]
        procs.append(subprocess.Popen(nodes.command(rank, argv), cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = time.monotonic() + 120
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (code, err) in enumerate(results):
        assert code == 0, f"node {rank} exited {code}:\n{err[-3000:]}"

    runs = [d for d in (outs[0] / "lstm-text").iterdir() if d.is_dir()]
    assert len(runs) == 1, runs
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["world_size"] == 4  # 2 nodes x 2 workers: one job, not two
    assert json.loads((runs[0] / "status.json").read_text())["status"] == "done"
    assert not outs[1].exists() or not any(outs[1].rglob("*")), sorted(outs[1].rglob("*"))
