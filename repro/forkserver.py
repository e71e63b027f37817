"""The server the local workers fork from (multiprocessing's forkserver), importable without torch.

The server imports torch, the worker code and what building a torch optimizer imports (torch._dynamo) once; every
worker forks from it instead of importing them again, and nothing forks a process that may have touched CUDA.
Where the launcher validates the settings and prepares the data itself (not with `run_in_server_child`, below),
`start_early()` starts the server before, so that its imports run on another core meanwhile.

The server, and so every worker forked from it, starts with glibc's malloc told (WORKER_MALLOC) to give each block
of 4 MiB or more its own mapping, returned to the system when freed, on huge pages. By default glibc raises that
threshold after the first large free and serves later large tensors from its heap, which keeps them when they are
freed: a quick-LM worker then holds about 95 MB more at its peak (8 workers: 2.8 GB instead of 2.0 GB in all).
Huge pages make mapping the blocks again at every step cheap (4 KiB pages cost the LM ~20 % of its speed; with
them, 4 bare LM loops on 2 cores ran as fast as with glibc's default: benchmarks/results/ab-2026-12-02.log); a
value the user sets in GLIBC_TUNABLES wins. A single worker runs in the launcher and keeps glibc's defaults."""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal

PRELOAD = ["repro.worker", "torch._dynamo", "repro._forkserver_guard"]
WORKER_MALLOC = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.hugetlb=1"  # ignored by a glibc without them


# The client side of multiprocessing's forkserver that a process forked from the server needs to ask it for more
# processes: the socket address (and, from Python 3.14 on, the key it checks); the "alive" descriptor and the
# resource tracker's come with every process the server forks.
_CLIENT_STATE = ("_forkserver_address", "_forkserver_authkey")
_joined_server = False  # this process was forked from the server by run_in_server_child: ask that server


def start_method() -> str:
    """'forkserver', with its server running: started here, with the preload and WORKER_MALLOC, unless it is."""
    if _joined_server:
        return "forkserver"
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


def in_server_child() -> bool:
    return _joined_server


def run_in_server_child(target, *args) -> int | None:
    """Exit code of ``target(*args)`` run in a process forked from the server (128 + N when killed by signal N), with
    this process's environment and folder; SIGINT and SIGTERM sent here are passed on to it. None when this
    Python's forkserver cannot be asked by such a process (its client state is not where this module expects it):
    then the caller does the work itself."""
    start_method()
    server = multiprocessing.forkserver._forkserver
    state = {name: getattr(server, name) for name in _CLIENT_STATE if hasattr(server, name)}
    if not state.get("_forkserver_address") or not hasattr(server, "_forkserver_alive_fd"):
        return None
    child = multiprocessing.get_context("forkserver").Process(
        target=_server_child, name="repro-launcher", args=(state, dict(os.environ), os.getcwd(), target, args))
    child.start()

    def forward(signum, frame):
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        child.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return child.exitcode if child.exitcode >= 0 else 128 - child.exitcode


def _server_child(state: dict, environ: dict, cwd: str, target, args) -> None:
    global _joined_server
    server = multiprocessing.forkserver._forkserver
    for name, value in state.items():
        setattr(server, name, value)
    server.ensure_running = _server_is_running  # it is: this process's parent; never start a second one
    _joined_server = True
    os.environ.clear()
    os.environ.update(environ)  # the launcher's (the server's holds WORKER_MALLOC)
    os.chdir(cwd)
    from repro.process_exit import exit_process
    from repro.worker import die_with_parent  # preloaded: no import here

    die_with_parent()
    with contextlib.suppress(OSError):
        with open("/proc/self/comm", "w") as comm:
            comm.write("repro-launcher")
    exit_process(target(*args))


def _server_is_running() -> None:
    pass
