import os
import subprocess
import sys
from pathlib import Path

import pytest

# The offline data copies: REPRO_SHARED_DATA, else ../shared/data beside the repository (as CI lays it out).
SHARED_DATA = Path(os.environ.get("REPRO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def fashion_mnist_dir() -> Path:
    """Fashion-MNIST's four IDX files: $REPRO_FASHION_MNIST_DIR, else Debian's dataset-fashion-mnist."""
    from repro.tasks.mnist import IDX_FILES, find_idx_file

    folder = Path(os.environ.get("REPRO_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    missing = [n for n in IDX_FILES if find_idx_file(folder, n, "FashionMNIST") is None]
    if missing:
        unavailable(f"Fashion-MNIST not in {folder} (missing {', '.join(missing)}): apt-get install "
                    "dataset-fashion-mnist, or set REPRO_FASHION_MNIST_DIR")
    return folder


def run_repro(*args, cwd=None, timeout=300, env=None):
    """Run the real CLI in a fresh process; returns the CompletedProcess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "repro", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


def unavailable(reason: str):
    """A real service a test needs is missing: skip on a developer's machine, fail under CI
    (REPRO_REQUIRE_SERVICES=1, set by .ci/run, which installs every service) so a skip never passes there."""
    if os.environ.get("REPRO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out] + [g for c in map(int, out) for g in descendants(c)]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent's reap is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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
