"""glibc malloc settings for a training process: tensors freed in one step are reused by the next.

A training step allocates and frees the same large tensors every time (the quick LM: four 28 MB logit-sized blocks and
more). glibc's default decides where they come from by history: its mmap threshold starts at 128 KiB and rises to the
size of the largest mmapped block freed so far, and it trims its heap whenever the free space at the top exceeds twice
that. Depending on the order in which a process happened to free its first large blocks, a step then either reuses
heap memory (no page faults) or maps, zero-fills and unmaps ~90-150 MB again (the quick LM: 23,000-39,000 page faults
per step), and identical runs differ by 10-20 % in speed; a fixed low threshold (4 MiB, what workers had before) makes
every step pay. Fixing both thresholds makes every process take the fast path: blocks up to 32 MiB (glibc's
largest allowed threshold) come from the heap, and freed memory stays there up to TRIM_THRESHOLD, so a step's
working set is mapped once. The cost is that a process keeps its peak working set (plus fragmentation) until it
exits. A glibc.malloc setting of the user's in GLIBC_TUNABLES wins: then nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 * 2**30


def keep_freed_memory() -> bool:
    """Fix glibc's thresholds in this process (True), or leave them (False): not glibc, or the user chose their own."""
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # musl, macOS: no mallopt; their allocators decide alone
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
