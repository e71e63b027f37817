"""The server the local workers fork from (multiprocessing's forkserver), importable without torch.

The server imports torch, the worker code and what building a torch optimizer imports (torch._dynamo) once; every
worker forks from it instead of importing them again, and nothing forks a process that may have touched CUDA.
`start_early()` starts it before the launcher validates the settings and prepares the data, so that its imports
run on another core meanwhile.

The server, and so every worker forked from it, starts with glibc's malloc told (WORKER_MALLOC) to give each block
of 4 MiB or more its own mapping, returned to the system when freed, on huge pages. By default glibc raises that
threshold after the first large free and serves later large tensors from its heap, which keeps them when they are
freed: a quick-LM worker then holds about 95 MB more at its peak (8 workers: 2.8 GB instead of 2.0 GB in all).
Huge pages make mapping the blocks again at every step cheap (4 KiB pages cost the LM ~20 % of its speed); a
value the user sets in GLIBC_TUNABLES wins. A single worker runs in the launcher and keeps glibc's defaults."""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os

PRELOAD = ["repro.worker", "torch._dynamo", "repro._forkserver_guard"]
WORKER_MALLOC = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.hugetlb=1"  # ignored by a glibc without them


def start_method() -> str:
    """'forkserver', with its server running: started here, with the preload and WORKER_MALLOC, unless it is."""
    multiprocessing.set_forkserver_preload(PRELOAD)
    with _environment("GLIBC_TUNABLES", _tunables(os.environ.get("GLIBC_TUNABLES"))):
        multiprocessing.forkserver.ensure_running()
    return "forkserver"


def start_early() -> None:
    start_method()


def _tunables(users: str | None) -> str:
    return f"{WORKER_MALLOC}:{users}" if users else WORKER_MALLOC  # glibc applies them in order: the user's last


@contextlib.contextmanager
def _environment(name: str, value: str):
    """``name=value`` in the environment of processes started inside the block (the server), not of this one after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
