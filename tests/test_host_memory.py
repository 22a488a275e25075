"""train/host_memory: memory freed on the C heap goes back to the OS."""
import sys

import pytest

from train import host_memory


def _resident_mib() -> float:
  with open("/proc/self/status") as status:
    line = next(line for line in status if line.startswith("VmRSS"))
  return int(line.split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    host_memory._glibc_malloc_trim() is None,  # pylint: disable=protected-access
                    reason="glibc's malloc_trim is Linux-only; elsewhere the call does nothing")
def test_freed_heap_pages_are_returned():
  # 100 MB in blocks above Python's small-object allocator, so they come from malloc, and one
  # block after them, so that the heap cannot shrink from its top when they are freed.
  blocks = [bytearray(2000) for _ in range(50_000)]
  pin = bytearray(2000)
  del blocks
  held = _resident_mib()
  assert host_memory.release_freed_memory()
  assert _resident_mib() < held - 50
  del pin
