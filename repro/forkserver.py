"""The server the local workers fork from (multiprocessing's forkserver), importable without torch.

The server imports torch, the worker code and what building a torch optimizer imports (torch._dynamo) once; every
worker forks from it instead of importing them again, and nothing forks a process that may have touched CUDA.
Where the launcher validates the settings and prepares the data itself (not with `run_in_server_child`, below),
`start_early()` starts the server before, so that its imports run on another core meanwhile.

Every training process, forked from here or not, fixes its malloc thresholds itself (repro/allocator.py)."""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys

PRELOAD = ["repro.worker", "torch._dynamo", "repro._forkserver_guard"]


# The client side of multiprocessing's forkserver that a process forked from the server needs to ask it for more
# processes: the socket address (and, from Python 3.14 on, the key it checks); the "alive" descriptor and the
# resource tracker's come with every process the server forks.
_CLIENT_STATE = ("_forkserver_address", "_forkserver_authkey")
_joined_server = False  # this process was forked from the server by run_in_server_child: ask that server


def start_method() -> str:
    """'forkserver', with its server running: started here, with the preload, unless it is."""
    if _joined_server:
        return "forkserver"
    multiprocessing.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()
    return "forkserver"


def start_early() -> None:
    start_method()


def in_server_child() -> bool:
    return _joined_server


def run_in_server_child(target, *args) -> int | None:
    """Exit code of ``target(*args)`` run in a process forked from the server (128 + N when killed by signal N), with
    this process's environment and folder; SIGINT and SIGTERM sent here are passed on to it. None when this
    Python's forkserver cannot be asked by such a process (its client state is not where this module expects it):
    then the caller does the work itself."""
    # Forwarding is installed first: a signal that comes before the child is ready is kept and passed on once it is.
    # Until then the child still ignores SIGINT, as the server does, and a Ctrl-C would be lost while it ran on.
    waiting, pending, child = True, [], None

    def forward(signum, frame):
        if waiting:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        start_method()
        server = multiprocessing.forkserver._forkserver
        state = {name: getattr(server, name) for name in _CLIENT_STATE if hasattr(server, name)}
        if not state.get("_forkserver_address") or not hasattr(server, "_forkserver_alive_fd"):
            return None
        context = multiprocessing.get_context("forkserver")
        ready = context.Event()  # set by the child once a signal would reach its own handlers
        child = context.Process(target=_server_child, name="repro-launcher",
                                args=(state, dict(os.environ), os.getcwd(), ready, target, args))
        child.start()
        while not ready.wait(0.05) and child.is_alive():
            pass
        waiting = False
        for signum in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)
        pending.clear()
        child.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in pending:  # no child took it: this process stops as it would have without the forwarding
            signal.raise_signal(signum)
    return child.exitcode if child.exitcode >= 0 else 128 - child.exitcode


def _server_child(state: dict, environ: dict, cwd: str, ready, target, args) -> None:
    global _joined_server
    server = multiprocessing.forkserver._forkserver
    for name, value in state.items():
        setattr(server, name, value)
    server.ensure_running = _server_is_running  # it is: this process's parent; never start a second one
    _joined_server = True
    os.environ.clear()
    os.environ.update(environ)  # the launcher's
    os.chdir(cwd)
    from repro.process_exit import exit_process
    from repro.worker import die_with_parent  # preloaded: no import here

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the server ignores it; this child stops on it
    try:
        ready.set()
        die_with_parent()
        with contextlib.suppress(OSError):
            with open("/proc/self/comm", "w") as comm:
                comm.write("repro-launcher")
        code = target(*args)
    except KeyboardInterrupt:  # Ctrl-C passed on before ``target`` could take it: interrupted, not failed
        print("repro: interrupted by SIGINT", file=sys.stderr)
        code = 130
    exit_process(code)


def _server_is_running() -> None:
    pass
