"""The images' recipe and CI's image check (.ci/docker-check): the top-level Dockerfile lints clean, and a machine
with a docker client but no daemon gets Debian's docker.io (which brings dockerd) instead of a skip. The image
itself is built and run by .ci/docker-check in CI, not here (minutes)."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unavailable

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / ".ci" / "docker-check"
# The dev extra's hadolint beside this Python (a pyenv shim on PATH needs pyenv's own PATH).
HADOLINT = next((str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), shutil.which("hadolint"))


@pytest.fixture
def needs_hadolint():
    if HADOLINT is None:
        unavailable("hadolint is not on PATH (the dev extra installs it)")


@pytest.fixture
def needs_root():
    if os.geteuid() != 0:
        unavailable("the check installs docker.io only as root")


def test_the_dockerfile_is_hadolint_clean(needs_hadolint):
    r = subprocess.run([HADOLINT, "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_one_dockerfile_with_both_variants():
    text = (REPO / "Dockerfile").read_text()
    assert "ARG VARIANT=gpu" in text and "AS base-gpu" in text and "AS base-cpu" in text
    assert not list((REPO / "docker").glob("Dockerfile*"))  # no second copy of the recipe


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.mark.parametrize("require", ["0", "1"])
def test_a_client_without_a_daemon_gets_docker_io(tmp_path, require, needs_hadolint, needs_root):
    """A docker client whose daemon does not answer, and no dockerd: the check asks apt-get for docker.io (here a
    stand-in that fails, so nothing is installed); that failure skips, or under CI (REPRO_REQUIRE_SERVICES=1)
    fails the check."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = tmp_path / "apt-get.calls"
    _stub(stubs, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1")
    _stub(stubs, "apt-get", f'echo "$*" >> {calls}; exit 100')
    # No sbin folders on PATH: that is where Debian puts dockerd.
    env = {"PATH": f"{stubs}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "HADOLINT": HADOLINT,
           "REPRO_REQUIRE_SERVICES": require}
    assert subprocess.run(["sh", "-c", "command -v dockerd"], env=env).returncode != 0
    r = subprocess.run(["bash", str(CHECK)], env=env, capture_output=True, text=True, timeout=120)
    assert "installing docker.io from Debian (missing: dockerd)" in r.stdout, r.stdout + r.stderr
    assert "install -y -q --no-install-recommends docker.io" in calls.read_text()
    reason = "no Docker daemon answers, dockerd not installed, and 'apt-get install docker.io' failed"
    if require == "1":
        assert r.returncode == 1 and f"docker-check: error: required under CI, but: {reason}" in r.stderr
    else:
        assert r.returncode == 0 and f"docker-check: skipped: {reason}" in r.stdout
