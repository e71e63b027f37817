"""Workers give freed tensor memory back to the system (worker.return_freed_memory): measured on a real process's
resident set, where glibc's default would keep it in the heap."""
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import sys
    import torch
    from repro.worker import return_freed_memory

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    if sys.argv[1] == "on":
        return_freed_memory()
    x = torch.ones(2 * 2**20); del x  # one large block freed: glibc's default raises its threshold here
    blocks = [torch.ones(2**20) for _ in range(16)]  # 16 x 4 MB, touched
    pin = torch.ones(64 * 1024)  # 256 KB allocated after them: the heap cannot shrink from its top
    held = rss_mb()
    del blocks
    print(held - rss_mb())
""")  # one process per case: blocks freed into the heap before the call would be reused by the case after it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_tensor_memory_goes_back_to_the_system():
    def freed_mb(case: str) -> float:
        out = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True, text=True, timeout=120,
                             check=True)
        return float(out.stdout)

    default, fixed = freed_mb("off"), freed_mb("on")
    assert default < 16, "glibc's default kept the freed blocks in the heap before"  # the probe still probes
    assert fixed > 60  # 64 MB freed, all of it returned
