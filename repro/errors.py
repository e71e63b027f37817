"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UsageError(Exception):
    """Bad input (unknown name, invalid value, unreadable path...). Never shown with a traceback."""


class WorkersFailed(RuntimeError):
    """A worker process failed or was killed: one line naming the rank and where its traceback is (exit code 1)."""
