"""Giving the host memory a compile freed back to the operating system.

XLA's compiler allocates and frees hundreds of MiB on several threads; glibc's malloc keeps
what they free in per-thread arenas, so the process's resident memory stays at the
compile's high-water mark and the step's buffers come on top of it. `malloc_trim(0)`
returns the free pages of every arena (docs/performance.md has the figures). Elsewhere than
glibc (macOS, musl) this does nothing.
"""
import ctypes
import ctypes.util
import functools


@functools.cache
def _glibc_malloc_trim():
  """glibc's malloc_trim, or None where the C library has none."""
  name = ctypes.util.find_library("c")
  libc = ctypes.CDLL(name) if name else None
  return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> bool:
  """Returns the C heap's free pages to the OS; True if any were returned."""
  trim = _glibc_malloc_trim()
  return bool(trim and trim(0))
