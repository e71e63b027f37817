"""Imported only by the workers' forkserver, after the rest of its preload (repro/forkserver.py):

- the forkserver ends when the launcher ends, however it ends, and the workers (which end with their parent, see
  worker.die_with_parent) go with it;
- the objects the preload created (torch's modules, functions, docstrings: about 180 MB) move to the garbage
  collector's permanent generation. A worker's collections then never write to them, so the pages a worker shares
  with the server stay shared instead of being copied into every worker (about 80 MB each at the first full
  collection; the gc.freeze() recipe of the Python documentation for processes that fork without exec). When the
  server itself ends they are unfrozen, so that its interpreter's teardown frees them as before (frozen objects would
  outlive it: nanobind-based extensions, e.g. newer triton's, then print "leaked instances" to the terminal). A
  worker inherits the handler; it only unfreezes there too, and workers end without teardown (process_exit)."""
import atexit
import gc

from repro.worker import die_with_parent

die_with_parent()
atexit.register(gc.unfreeze)
gc.freeze()  # no gc.collect() first: the imports leave no cyclic garbage, and it would cost ~0.2 s of start-up
