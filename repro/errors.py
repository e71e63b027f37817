"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UsageError(Exception):
    """Bad input (unknown name, invalid value, unreadable path...). Never shown with a traceback."""
