"""Process memory settings: glibc's malloc keeping freed memory for reuse, or handing it back."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30


def retain_freed_memory() -> bool:
    """Have glibc's malloc keep up to 1 GiB of freed memory for reuse instead of handing it back to the kernel
    (process-wide; a no-op elsewhere). By default every block over 32 MiB is a fresh mmap, so each of ViT-B's
    [64 x 50 x 3072] fp32 MLP activations (39 MB) was a new mapping whose pages faulted in one by one (measured in
    docs/performance.md). Returns whether the setting took."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    # A fixed mmap threshold turns off glibc's dynamic one, which would otherwise also raise the trim threshold.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


# glibc's own values (its dynamic mmap threshold, turned off by any setting, stays off)
_DEFAULT_THRESHOLD = 128 * 1024


def release_freed_memory() -> bool:
    """Undo :func:`retain_freed_memory` in a process that inherited it by fork (a DataLoader worker, which holds no
    large activations), and hand back the freed memory it inherited. Returns whether the setting took."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD))
    libc.malloc_trim(0)
    return done
