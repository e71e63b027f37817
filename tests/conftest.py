import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_repro(*args, cwd=None, timeout=300, env=None):
    """Run the real CLI in a fresh process; returns the CompletedProcess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "repro", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small real text corpus in the bring-your-own layout (train.txt, valid.txt, test.txt)."""
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    d = tmp_path / "corpus"
    d.mkdir()
    for name, lines in (("train.txt", 400), ("valid.txt", 40), ("test.txt", 40)):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(lines))
        (d / name).write_text(text + "\n")
    return d
