"""Command line: compile the real train step for a TPU slice on this machine; print what one
chip would hold and compute.

  python -m tools.aot_compile --config=configs/t5_xl_pod.py --topology=v5e:16x16 \
      [--config.train.batch_size=1024 ...]

No TPU is needed, only libtpu (`pip install -e ".[tpu]"`): its compiler runs
here on devices that describe the slice. The step is the one train/main.py runs
(train/step.jit_train_step, state shardings from train/state.py, batch sharding
from train/sharding.py, on a mesh of the slice's chips shaped by config.mesh),
fed an abstract batch of the shapes the config's objective makes. XLA lays out
every buffer of the SPMD program, so the memory it reports is one chip's; a
program that cannot fit in HBM fails to compile with the compiler's message.
Either way, a step that does not fit exits with one line: by how many GiB it
exceeds the chip's usable HBM, and the mesh layout, microbatches or remat that
tools/plan's estimates (scaled to what this compile needed) say would fit.
"""
import dataclasses
import math
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from jax.experimental import topologies
from ml_collections import config_flags

from model import FAMILIES, count_params, model_config
from train import cli, hardware, objectives, optim, sharding, validation
from train import state as state_lib
from train import step as step_lib

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  device_kind: str  # what jax reports; the key of train/hardware.PUBLISHED_PEAK
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
    return hardware.PUBLISHED_PEAK[self.spec.device_kind]


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


def topology_devices(topology: Topology) -> list:
  """Compile-only devices of every chip of the slice, one per chip as on the real VMs."""
  # libtpu holds /tmp/libtpu_lockfile for any process that loaded it (every JAX process, once
  # it is installed); describing a slice touches no chip, so it may share the library.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  # Hosts of 2x2x1 chips (what MaxText passes for every generation); a 1x1 slice has one chip.
  bounds = tuple(min(2, d) for d in topology.shape[:2]) + (1,)
  try:
    devices = topologies.get_topology_desc(
        platform="tpu", topology_name=topology.name, chip_config_name=topology.spec.chip_config,
        chips_per_host_bounds=bounds, num_slices=1).devices
  except RuntimeError as e:  # also jax.errors.JaxRuntimeError
    first = str(e).strip().splitlines()[0]
    if "not installed" in first:
      first = 'libtpu is not installed; pip install -e ".[tpu]"'
    raise ValueError(f"cannot describe TPU topology {topology.name!r}: {first}") from None
  if len(devices) != topology.chips or devices[0].device_kind != topology.spec.device_kind:
    raise ValueError(f"libtpu describes {topology.name!r} as {len(devices)} devices of kind "
                     f"{devices[0].device_kind!r}, not {topology.chips} of "
                     f"{topology.spec.device_kind!r}")
  return devices


def abstract_batch(config: ml_collections.ConfigDict, batch_sharding) -> dict:
  """A global train batch as shapes: the fields and lengths the objective produces."""
  family = config.model.family
  length, encoder_length = objectives.row_lengths(config)
  names = FAMILIES[family].INPUTS + ("targets", "weights", "target_bytes")
  if family == "decoder" and config.objective == "prefix_lm":
    names += ("prefix",)
  rows = config.train.batch_size

  def field(name):
    row = encoder_length if name.startswith("encoder_") else length
    dtype = jnp.float32 if name == "weights" else jnp.int32
    return jax.ShapeDtypeStruct((rows, row), dtype, sharding=batch_sharding)

  return {name: field(name) for name in names}


def make_mesh(config: ml_collections.ConfigDict, topology: Topology, devices):
  """config.mesh over the slice's chips; each mesh axis must be whole sides of the torus."""
  try:
    return sharding.make_mesh(config.mesh, devices)
  except NotImplementedError as e:  # jax.make_mesh: an axis would split a side of the torus
    sizes = {a: config.mesh[a] for a in sharding.MESH_AXES}
    raise ValueError(f"config.mesh={sizes} does not map onto the {topology.name} torus: each "
                     f"mesh axis must be a product of whole sides of {topology.shape} "
                     f"({str(e).splitlines()[0][:80]}...)") from None


def check(config: ml_collections.ConfigDict, topology: Topology, mesh) -> None:
  """What train/main.py checks, with the slice's host count instead of this machine's."""
  rules = tuple((name, axes) for name, axes in config.sharding.rules)
  validation.validate(config, sharding.batch_divisor(mesh, rules))
  hosts = max(d.process_index for d in mesh.devices.flat) + 1
  if config.train.batch_size % hosts:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} does not divide over "
                     f"the {hosts} hosts of {topology.name}; use a multiple of {hosts}")


def compile_step(config: ml_collections.ConfigDict, mesh):
  """(compiled train step, seconds to lower and compile) on `mesh`, for an abstract batch."""
  cfg = model_config(config)
  rules = tuple((name, axes) for name, axes in config.sharding.rules)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  abstract, shardings = state_lib.state_shardings(cfg, tx, mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  step = step_lib.jit_train_step(state_lib.model_graphdef(cfg), tx, config.seed,
                                 config.model.dropout_rate > 0, shardings, batch_sharding,
                                 config.train.microbatches, rules=rules,
                                 scoring=step_lib.scoring(config))
  start = time.perf_counter()
  try:
    compiled = step.lower(abstract, abstract_batch(config, batch_sharding)).compile()
  except RuntimeError as e:  # XLA's own verdict, e.g. RESOURCE_EXHAUSTED: out of HBM
    message = str(e).strip().splitlines()[0]
    error = OutOfHbm if "RESOURCE_EXHAUSTED" in message else ValueError
    raise error(f"the TPU compiler refused the step: {message}") from None
  return compiled, time.perf_counter() - start


class OutOfHbm(ValueError):
  """The TPU compiler's verdict that the step cannot fit in one chip's HBM."""

  @property
  def needed_bytes(self) -> int | None:
    """What the compiler says the step needs at least (libtpu 0.0.42.1: "... the total memory
    required for HLO temporaries (24.08G) exceeds available HBM (15.75G)"), if it says."""
    match = re.search(r"\(([\d.]+)G\) exceeds available HBM", str(self))
    return int(float(match[1]) * GiB) if match else None


def compiled_flops(compiled) -> float:
  """FLOPs of one chip's program as XLA counts them (a loop body once, whatever its trips)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one dict per program
  return float(cost.get("flops", 0.0))


def layer_counted_flops(config: ml_collections.ConfigDict, mesh) -> float:
  """Compiled FLOPs of `config` with every layer counted, for scanned layers.

  XLA's cost analysis counts the scan's body once, so the step is compiled
  unrolled at depths 1 and 2 (each stack of an encoder-decoder on its own) and
  the per-layer difference is extrapolated to the config's depth.
  """
  def flops(layers, decoder_layers=0):
    c = config.copy_and_resolve_references()
    c.model.scan_layers = False
    c.model.num_layers = layers
    if config.model.family == "encoder_decoder":
      c.model.num_decoder_layers = decoder_layers
    return compiled_flops(compile_step(c, mesh)[0])

  cfg = model_config(config)
  if cfg.family != "encoder_decoder":
    one = flops(1)
    return one + (cfg.num_layers - 1) * (flops(2) - one)
  one = flops(1, 1)
  return (one + (cfg.num_layers - 1) * (flops(2, 1) - one)
          + (cfg.decoder_layers - 1) * (flops(1, 2) - one))


@dataclasses.dataclass(frozen=True)
class Report:
  """Per-chip figures of one compiled step."""
  topology: Topology
  mesh: dict
  num_params: int
  arguments: int  # bytes: state + batch shards
  outputs: int  # new state + metrics
  aliased: int  # outputs written over donated arguments (the state), counted once
  temporaries: int
  code: int
  compiled_flops: float  # as XLA counts them: a scanned layer once
  counted_flops: float | None  # every layer counted; None if scanned and not counted
  model_flops: float  # step_lib.model_flops_per_step, over the chips
  compile_seconds: float

  @property
  def total(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

  @property
  def fits(self) -> bool:
    return self.total <= self.topology.usable_bytes


def measure(config: ml_collections.ConfigDict, topology: Topology, devices=None, *,
            count_layers: bool = True) -> Report:
  """Compiles `config`'s train step for `topology` and reads one chip's memory and FLOPs.

  count_layers: for scanned layers, also compile shallow unrolled copies to count
  every layer's FLOPs (see layer_counted_flops); else that figure is XLA's own.
  """
  devices = topology_devices(topology) if devices is None else devices
  mesh = make_mesh(config, topology, devices)
  check(config, topology, mesh)
  compiled, seconds = compile_step(config, mesh)
  memory = compiled.memory_analysis()
  flops = compiled_flops(compiled)
  counted = flops
  if config.model.scan_layers:
    counted = layer_counted_flops(config, mesh) if count_layers else None
  cfg = model_config(config)
  model_flops = step_lib.model_flops_per_step(config) / topology.chips
  return Report(topology=topology, mesh=dict(mesh.shape), num_params=count_params(cfg),
                arguments=memory.argument_size_in_bytes, outputs=memory.output_size_in_bytes,
                aliased=memory.alias_size_in_bytes, temporaries=memory.temp_size_in_bytes,
                code=memory.generated_code_size_in_bytes, compiled_flops=flops,
                counted_flops=counted, model_flops=model_flops, compile_seconds=seconds)


def format_report(r: Report) -> str:
  t = r.topology
  gib = lambda b: f"{b / GiB:8.2f} GiB"
  rows = [("arguments (state + batch)", r.arguments), ("outputs (new state + metrics)", r.outputs),
          ("aliased (donated state, once)", -r.aliased), ("temporaries", r.temporaries),
          ("generated code", r.code)]
  lines = [f"{t.name} ({t.accelerator_type}): {t.chips} chips of {t.spec.device_kind}, "
           f"{t.spec.hbm_gib:g} GiB HBM each ({t.spec.usable_gib:g} GiB usable); mesh {r.mesh}; "
           f"{r.num_params / 1e9:.3f}B parameters",
           "per-chip memory:"]
  lines += [f"  {name:<32}{gib(b)}" for name, b in rows]
  verdict = "fits" if r.fits else "DOES NOT FIT"
  lines.append(f"  {'total':<32}{gib(r.total)}  ({100 * r.total / t.usable_bytes:.0f}% of "
               f"{t.spec.usable_gib:g} GiB usable: {verdict})")
  lines.append(f"per-chip FLOPs per step: model {r.model_flops:.4g} "
               "(the model's count for the batch / chips)")
  if r.counted_flops is None or r.counted_flops != r.compiled_flops:
    if r.counted_flops is not None:
      lines.append(f"  compiled, every layer counted  {r.counted_flops:.4g}  "
                   f"({r.counted_flops / r.model_flops:.3f} x model)")
    lines.append(f"  compiled, as XLA counts        {r.compiled_flops:.4g}  "
                 "(the scanned layer once)")
  else:
    lines.append(f"  compiled                       {r.compiled_flops:.4g}  "
                 f"({r.compiled_flops / r.model_flops:.3f} x model)")
  lines += [f"  model FLOPs at the {t.peak_flops / 1e12:.0f} TFLOP/s bf16 peak: "
            f"{r.model_flops / t.peak_flops:.3g} s per step at 100% MFU",
            f"compile time: {r.compile_seconds:.1f} s (the step)"]
  return "\n".join(lines)


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so others can import this."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("topology", None, f"TPU slice: {TOPOLOGY_HELP}.")
  flags.DEFINE_bool("count_layers", True, "With scanned layers, also compile 1- and 2-layer "
                    "unrolled copies to count every layer's FLOPs (XLA counts a loop body once).")
  flags.mark_flags_as_required(["config", "topology"])


def quiet_libtpu(topology: Topology) -> None:
  """Nothing here runs on a TPU: keep JAX on the CPU, and tell libtpu what it would otherwise
  ask the (absent) GCE metadata server, which it warns about on stderr."""
  for name, value in (("JAX_PLATFORMS", "cpu"), ("TPU_SKIP_MDS_QUERY", "1"),
                      ("TPU_WORKER_HOSTNAMES", "localhost"),
                      ("TPU_ACCELERATOR_TYPE", topology.accelerator_type)):
    os.environ.setdefault(name, value)
  jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])


def what_to_change(config: ml_collections.ConfigDict, topology: Topology,
                   needed: int | None, at_least: bool = False) -> str:
  """How far the step overflows one chip's usable HBM, and the changes tools/plan estimates fit.

  The estimates are scaled by `needed` (the bytes the compile asked for; `at_least`: a
  lower bound, as in the compiler's refusal) over the estimate for config's own layout,
  so that the estimates' error for this model cancels.
  """
  from tools import plan  # here, not at the top: tools/plan imports this module
  sizes = sharding.mesh_shape(config.mesh, topology.chips)
  own = plan.estimate(config, sizes).total
  if needed:
    over = f"{'at least ' * at_least}{(needed - topology.usable_bytes) / GiB:.2f} GiB more than"
  else:  # known only to need more than there is, and at least the estimate
    over, needed = "more than", max(topology.usable_bytes + 1, own)
  changes = plan.changes_that_fit(config, topology, sizes, needed / own if own else 1.0)
  fixes = ("try " + ", or ".join(changes) if changes else
           f"no single change is estimated to fit: {plan.NOTHING_FITS}, or several together")
  return (f"one chip needs {over} the {topology.spec.usable_gib:g} GiB usable on "
          f"{topology.spec.device_kind}; {fixes} (python -m tools.plan compares every layout)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  try:
    topology = parse_topology(flags.FLAGS.topology)
    quiet_libtpu(topology)
    report = measure(config, topology, count_layers=flags.FLAGS.count_layers)
  except OutOfHbm as e:
    sys.exit(f"error: {str(e).rstrip('.')}; "
             f"{what_to_change(config, topology, e.needed_bytes, at_least=True)}")
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(format_report(report))
  if not report.fits:
    sys.exit(f"error: the step does not fit: {what_to_change(config, topology, report.total)}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
