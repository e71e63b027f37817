"""repro/allocator.py: with the training process's malloc thresholds fixed, a step that frees and allocates the same
large tensors again maps no new memory (no page faults), whatever the process freed before; under a low fixed
threshold (what workers had before) every step faults its blocks in again."""
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource
    import sys

    import torch

    from repro import allocator

    applied = allocator.keep_freed_memory()
    small = torch.ones(2**20)  # 4 MB mapped and freed first: glibc's default would set its threshold here
    del small

    def step():  # a language model's logits, their softmax and both gradients: 28 MB blocks, written
        blocks = [torch.ones(700, 10000) for _ in range(4)]
        del blocks

    for _ in range(5):  # the first steps map the working set (glibc places the blocks until they fit)
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


def faults_per_step(tunables: str | None) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["OMP_NUM_THREADS"] = "1"
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    applied, faults = out.stdout.split()
    return applied, float(faults)


@pytest.mark.slow
def test_a_step_reuses_the_memory_the_last_step_freed():
    applied, faults = faults_per_step(None)
    assert applied == "True"
    assert faults < 200  # 4 x 28 MB = 27,000 pages of 4 KiB if the blocks were mapped afresh


@pytest.mark.slow
def test_a_users_malloc_setting_wins_and_a_low_threshold_faults_every_step():
    applied, faults = faults_per_step("glibc.malloc.mmap_threshold=4194304")
    assert applied == "False"
    assert faults > 20_000
