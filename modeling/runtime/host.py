"""Process-level speed settings for CPU training and inference.

A ResNet50 step allocates and frees activation buffers of tens of MB; glibc's malloc hands
those back to the kernel and page-faults them in again on every step. tcmalloc keeps them, which
on a 2-core CPU made a bf16 training step about 25% faster (docs/benchmarks.json). An allocator
can only be chosen before the process starts, so `use_tcmalloc` re-executes the script once
with LD_PRELOAD set, keeping the same PID (torchrun and accelerate still track it).
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
TCMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
OPT_OUT = "PNEUMONIA_NO_TCMALLOC"


def find_tcmalloc() -> str | None:
    """Path of a system tcmalloc (Debian/Ubuntu: apt install libtcmalloc-minimal4), or None."""
    for directory in TCMALLOC_DIRS:
        for name in TCMALLOC_NAMES:
            if (Path(directory) / name).exists():
                return str(Path(directory) / name)
    found = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    return found if found and os.path.isabs(found) else None


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (Linux), else what the platform module knows."""
    import platform
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def tcmalloc_active() -> bool:
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def use_tcmalloc() -> None:
    """Re-execute this script under tcmalloc if it is installed and not yet in use (Linux only).

    Call it first thing in a script's `__main__` block. Set PNEUMONIA_NO_TCMALLOC=1 to opt out.
    """
    if sys.platform != "linux" or tcmalloc_active() or os.environ.get(OPT_OUT):
        return
    library = find_tcmalloc()
    if library is None:
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    os.environ["LD_PRELOAD"] = preload
    os.environ[OPT_OUT] = "1"  # never loop, whatever happens in the new process
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
