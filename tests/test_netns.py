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
import torch

from conftest import unavailable

import netns

from repro import checkpoint

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


def _two_nodes(nodes, tmp_path, tiny_corpus, node1_sees_node0: bool = True) -> Path:
    """A 2 x 2-worker CELGC run over the namespaces; its run folder (on node 0)."""
    outs = [tmp_path / "node0", tmp_path / "node1"]
    outs[0].mkdir()
    env = {**netns.clean_environment(), "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in (0, 1):
        argv = [sys.executable, "-m", "repro", "run", "lstm-text", "--machines", "2", "--run-opt", "nodes=2",
                "--run-opt", f"node_rank={rank}", "--run-opt", f"master_addr={nodes.addresses[0]}",
                "--run-opt", f"master_port={PORT}",
                "--algo", "celgc", "--interval", "2", "--max-steps", "3", "--data-dir", str(tiny_corpus),
                *TINY, "--out", str(outs[rank])]
        if rank == 1 and not node1_sees_node0:  # a machine of its own disk: an empty file system over node 0's
            argv = ["sh", "-c", 'mount -t tmpfs repro-test "$0" && exec "$@"', str(outs[0]), *argv]
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
    return runs[0]


def _rank_models(run_dir: Path) -> list:
    path = checkpoint.newest(run_dir)
    payload = checkpoint.load(path, world_size=4, check_ranks=True)
    entries = [e if isinstance(e, dict) else (path.parent / e).name for e in payload["ranks"]]
    assert all(isinstance(e, dict) or e == checkpoint.shard_name(payload["epoch"], payload["step"], r)
               for r, e in enumerate(entries))
    return entries, [checkpoint.rank_state(path, payload, r)["model"] for r in range(4)]


def test_two_namespaced_nodes_form_one_job(nodes, tmp_path, tiny_corpus):
    """Node 1 sees node 0's run folder (a shared file system): every rank writes its own checkpoint file."""
    entries, models = _rank_models(_two_nodes(nodes, tmp_path, tiny_corpus))
    assert all(isinstance(e, str) for e in entries)  # names of the ranks' own files, each checked by _rank_models
    assert all(m.keys() == models[0].keys() for m in models)


def test_nodes_without_a_shared_file_system_send_their_states_to_rank_0(nodes, tmp_path, tiny_corpus):
    """Node 1 cannot see node 0's run folder: its ranks' states travel to rank 0, inside the one checkpoint file."""
    run = _two_nodes(nodes, tmp_path, tiny_corpus, node1_sees_node0=False)
    entries, models = _rank_models(run)
    assert all(isinstance(e, dict) for e in entries)
    assert not list((run / "checkpoints").glob("*.rank*.pt"))
    # CELGC after 3 steps with I = 2: the ranks' models differ (a local step since the last average)
    assert not torch.equal(models[0]["decoder.bias"], models[3]["decoder.bias"])
