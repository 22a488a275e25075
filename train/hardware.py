"""The hardware tables in one place: published peaks (for MFU), Cloud TPU slices, and the
XLA options a platform's train step compiles with.

Peaks are dense bf16 FLOP/s per chip from the vendors' datasheets; on CPU the peak is
a matmul measured in this process. TPU generations and slice shapes are those Cloud
TPU offers, for compiling the train step for a slice on any machine (tools/aot_compile).
"""
import dataclasses
import functools
import math
import os
import platform
import re
import time
from typing import Callable

import jax
import jax.numpy as jnp

GiB = 2**30

# Published dense bf16 peaks per chip (vendor datasheets).
PUBLISHED_PEAK = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5": 459e12,
                  "TPU v5p": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
                  "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12}


def shortest_seconds(run: Callable[[], object], repeats: int) -> float:
  """The shortest wall time of `repeats` calls of `run` (which waits for its result), after
  one call that is not timed (the compile, for a jitted one)."""
  run()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  return best


@functools.cache
def measured_matmul_peak(size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of a jitted fp32 [size, size] matmul on one device: the CPU's practical peak.
  Measured once per process (seconds on a small CPU), so that runs trained one after
  another in a process (tools/compare, fine-tunings, notebooks) share one MFU yardstick."""
  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  return 2 * size**3 / shortest_seconds(lambda: matmul(a).block_until_ready(), repeats)


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The host CPU for a benchmark's header: 'AMD EPYC (family 25, model 17), 2 cores,
  AVX-512' from Linux's cpuinfo; elsewhere what `platform` knows.

  One cloud machine type can land on CPU generations whose vector units differ in width,
  which moved XLA:CPU's matmuls by 2x on ours (docs/performance.md), so a table of timings
  says which one it ran on.
  """
  try:
    with open(cpuinfo, encoding="utf-8") as f:
      first = f.read().split("\n\n")[0]
  except OSError:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
  fields = {key.strip(): value.strip() for key, value in
            (line.split(":", 1) for line in first.splitlines() if ":" in line)}
  name = fields.get("model name", platform.machine())
  if "cpu family" in fields:
    name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
  if "flags" not in fields:  # not x86 (ARM lists "Features")
    return f"{name}, {os.cpu_count()} cores"
  flags = fields["flags"].split()
  vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
  return f"{name}, {os.cpu_count()} cores, {vectors}"


def step_compiler_options(platform: str | None) -> dict | None:
  """XLA options for a train step whose state is donated, compiled for `platform`.

  On CPU: copy insertion with region-based live ranges. XLA:CPU fuses each AdamW moment's
  update into two kernels, the new moment's and the new parameter's, and both read the old
  moment. The default analysis cannot prove that the parameter's kernel reads it before the
  moment's kernel overwrites it in place, so it copied every donated moment at the top of
  the step, and the copies stayed resident through the forward and backward passes. The
  region-based analysis drops those copies; the program computes the same bits. Other
  platforms keep their compiler's defaults.
  """
  return {"xla_cpu_copy_insertion_use_region_analysis": True} if platform == "cpu" else None


def published_peak(kind: str) -> float | None:
  """The published dense bf16 FLOP/s of a chip named `kind` (JAX's device_kind, or the name
  torch.cuda gives), or None for one the table lacks (a CPU)."""
  return next((peak for name, peak in PUBLISHED_PEAK.items() if kind.startswith(name)), None)


def peak_flops_per_device() -> tuple[float, str]:
  """(FLOP/s per device, where the figure comes from)."""
  kind = jax.devices()[0].device_kind
  peak = published_peak(kind)
  if peak:
    return peak, f"published bf16 peak of {kind}"
  # On CPU all devices share the same cores, so the matmul peak is for the whole host.
  return measured_matmul_peak() / jax.local_device_count(), "fp32 matmul measured in-process"


@dataclasses.dataclass(frozen=True)
class Generation:
  device_kind: str  # what jax reports; the key of train/PUBLISHED_PEAK
  hbm_gib: float  # published
  usable_gib: float  # what libtpu's compiler lets a program use
  dims: int  # 2: a 2D torus named AxB; 3: a 3D torus named AxBxC
  chip_config: str  # "megacore": the chip's two TensorCores are one JAX device, as on a real VM
  max_chips: int  # a whole pod
  cloud_name: str  # accelerator type prefix, counted in chips (v5e, v6e) or TensorCores (v4, v5p)


# HBM per chip as published on Cloud TPU's system-architecture pages
# (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e: "32 GiB", "16 GB", "95 GB", "32 GB").
# Usable: the limit libtpu 0.0.42.1 names when a program exceeds it ("available HBM").
GENERATIONS = {
    "v4": Generation("TPU v4", 32, 30.75, 3, "megacore", 4096, "v4-{cores}"),
    "v5e": Generation("TPU v5 lite", 16, 15.75, 2, "default", 256, "v5litepod-{chips}"),
    "v5p": Generation("TPU v5", 95, 95.74, 3, "megacore", 8960, "v5p-{cores}"),
    "v6e": Generation("TPU v6 lite", 32, 31.25, 2, "default", 256, "v6e-{chips}"),
}
# The 2D slice shapes Cloud TPU offers for v5e and v6e.
SHAPES_2D = {(1, 1), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)}
# v4/v5p: these slices under a cube; from a cube (4x4x4) up, every side a multiple of 4.
SMALL_SHAPES_3D = {(2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4)}
TOPOLOGY_HELP = ("v5e:AxB or v6e:AxB (1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16), v4:AxBxC or "
                 "v5p:AxBxC (2x2x1, 2x2x2, 2x2x4, 2x4x4, or sides that are multiples of 4 in "
                 "increasing order, e.g. 4x4x8)")


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # e.g. "v5e:16x16"
  generation: str
  shape: tuple[int, ...]

  @property
  def chips(self) -> int:
    return math.prod(self.shape)

  @property
  def spec(self) -> Generation:
    return GENERATIONS[self.generation]

  @property
  def usable_bytes(self) -> int:
    return int(self.spec.usable_gib * GiB)

  @property
  def accelerator_type(self) -> str:
    """The Cloud TPU name of the slice, e.g. v5litepod-256 or v5p-128."""
    return self.spec.cloud_name.format(chips=self.chips, cores=2 * self.chips)

  @property
  def peak_flops(self) -> float:
    return PUBLISHED_PEAK[self.spec.device_kind]


def parse_topology(name: str) -> Topology:
  """The slice named `name`; ValueError for names Cloud TPU does not offer.

  libtpu itself accepts any AxB(xC), even slices larger than a pod, so the
  published shapes are checked here.
  """
  match = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+)*)", name)
  if not match:
    raise ValueError(f"unknown topology {name!r}; use {TOPOLOGY_HELP}")
  generation, shape = match[1], tuple(int(d) for d in match[2].split("x"))
  spec = GENERATIONS[generation]
  if len(shape) != spec.dims:
    raise ValueError(f"topology {name!r}: {generation} slices have {spec.dims} sides; "
                     f"use {TOPOLOGY_HELP}")
  if spec.dims == 2:
    known = shape in SHAPES_2D
  else:
    cube_multiple = all(d % 4 == 0 for d in shape) and list(shape) == sorted(shape)
    known = shape in SMALL_SHAPES_3D or cube_multiple
  topology = Topology(name, generation, shape)
  if not known or topology.chips > spec.max_chips:
    raise ValueError(f"topology {name!r} is not a {generation} slice Cloud TPU offers "
                     f"(a pod has {spec.max_chips} chips); use {TOPOLOGY_HELP}")
  return topology


def quiet_libtpu(topology: Topology) -> None:
  """Nothing here runs on a TPU: keep JAX on the CPU, and tell libtpu what it would otherwise
  ask the (absent) GCE metadata server, which it warns about on stderr."""
  for name, value in (("JAX_PLATFORMS", "cpu"), ("TPU_SKIP_MDS_QUERY", "1"),
                      ("TPU_WORKER_HOSTNAMES", "localhost"),
                      ("TPU_ACCELERATOR_TYPE", topology.accelerator_type)):
    os.environ.setdefault(name, value)
  jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
