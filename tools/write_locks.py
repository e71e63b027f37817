"""Write requirements/lock-cuda.txt and lock-cpu.txt from the running environment: the exact versions of
`repro`'s runtime dependency closure (no dev tools). Run it in the environment that produced the results:

    python tools/write_locks.py
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
GPU_ONLY = re.compile(r"^(nvidia-|cuda-|triton$)")  # wheels the CPU build of torch does without


def closure(root: str) -> dict[str, str]:
    env, seen, todo = default_environment(), {}, [(root, frozenset())]
    done = set()
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if (key, extras) in done:
            continue
        done.add((key, extras))
        seen[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            # a requirement applies without extras, or under one of the extras asked for (cuda-toolkit[cublas,...])
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
                todo.append((req.name, frozenset(req.extras)))
    seen.pop("repro", None)
    return dict(sorted(seen.items()))


def main() -> None:
    pins = closure("repro")
    header = (f"# Exact versions of repro's runtime dependencies (python {sys.version.split()[0]}), written by "
              "tools/write_locks.py.\n# Install: pip install --no-deps -r THIS_FILE && pip install --no-deps .\n")
    cuda = [f"{n}=={v.split('+')[0]}" for n, v in pins.items()]
    (ROOT / "requirements" / "lock-cuda.txt").write_text(header + "\n".join(cuda) + "\n")
    cpu = ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    for n, v in pins.items():
        if GPU_ONLY.match(n):
            continue
        v = v.split("+")[0]
        cpu.append(f"{n}=={v}+cpu" if n in ("torch", "torchvision") else f"{n}=={v}")
    (ROOT / "requirements" / "lock-cpu.txt").write_text(header + "\n".join(cpu) + "\n")
    print(f"wrote {len(cuda)} pins to requirements/lock-cuda.txt, {len(cpu) - 1} to requirements/lock-cpu.txt")


if __name__ == "__main__":
    main()
