"""Ending a process that imported torch without the interpreter's teardown."""
from __future__ import annotations

import atexit
import os
import sys


def exit_process(code: int) -> None:
    """Run the exit handlers (atexit: multiprocessing's and logging's clean-up, temporary folders), flush
    stdout/stderr, then end the process with ``os._exit``: no module teardown, no C++ static destructors, as
    multiprocessing's fork and forkserver children always end. Two reasons:

    - with torch 2.15, a process that used gloo sometimes aborts after Python has finished, in C++ teardown
      ("terminate called without an active exception"; faulthandler shows no Python frame; 1 of 57 test runs
      under load here), and a launcher reads that as a failed rank although the run had written everything;
    - tearing down torch and torch._dynamo's modules costs a noticeable part of a short command's time (start-up
      benchmark, README).

    Call it only once every file the command wrote is closed (``with`` blocks and explicit ``close`` do that)."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
                pass
        os._exit(code)
