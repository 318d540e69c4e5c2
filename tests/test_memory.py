"""The allocator setting of `selftrain.memory`: large tensors come from glibc's heap and their
memory stays in the process after `free`, instead of being unmapped and faulted in again."""
import ctypes
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

PROBE = r"""
import ctypes, sys
import torch

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "on":
    from selftrain.memory import retain_freed_memory
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent
size = 20 << 20
mapped_before = libc.mallinfo2().hblkhd
t = torch.empty(size, dtype=torch.uint8)
t.fill_(1)
mapped_during = libc.mallinfo2().hblkhd
del t
print(mapped_during - mapped_before, libc.mallinfo2().fordblks)
"""


def _probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    mapped, free = out.stdout.split()
    return int(mapped), int(free)


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc >= 2.33 (mallinfo2) only")
def test_large_tensors_come_from_the_heap_and_stay_after_free():
    mapped, free = _probe("on")
    assert mapped < (1 << 20)  # not a fresh mmap of its own
    assert free >= 20 << 20  # the freed 20 MB kept for the next tensor


@pytest.mark.skipif(not _glibc(), reason="glibc >= 2.33 (mallinfo2) only")
def test_without_the_setting_a_fresh_process_maps_large_tensors():
    mapped, _ = _probe("off")  # the probe can fail: glibc's default is what the setting changes
    assert mapped >= 20 << 20
