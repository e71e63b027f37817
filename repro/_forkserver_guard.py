"""Imported only by the workers' forkserver (repro/launch.py preloads it): the forkserver ends when the launcher
ends, however it ends, and the workers (which end with their parent, see worker.die_with_parent) go with it."""
from repro.worker import die_with_parent

die_with_parent()
