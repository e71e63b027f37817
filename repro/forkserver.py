"""The server the local workers fork from (multiprocessing's forkserver), importable without torch.

The server imports torch, the worker code and what building a torch optimizer imports (torch._dynamo) once; every
worker forks from it instead of importing them again, and nothing forks a process that may have touched CUDA.
`start_early()` starts it before the launcher validates the settings and prepares the data, so that its imports
run on another core meanwhile."""
from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver

PRELOAD = ["repro.worker", "torch._dynamo", "repro._forkserver_guard"]


def start_method() -> str:
    multiprocessing.set_forkserver_preload(PRELOAD)
    return "forkserver"


def start_early() -> None:
    start_method()
    multiprocessing.forkserver.ensure_running()
