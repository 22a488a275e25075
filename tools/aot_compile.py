"""Command line: compile the real train step for a TPU slice on this machine; print what one
chip would hold and compute.

  python -m tools.aot_compile --config=configs/t5_xl_pod.py --topology=v5e:16x16 \
      [--config.train.batch_size=1024 ...]

No TPU is needed, only libtpu (`pip install -e ".[tpu]"`): its compiler runs
here on devices that describe the slice (train/hardware.py has the slices Cloud TPU
offers). The step is the one train/main.py runs, from the same Experiment
(train/experiment.py) on a mesh of the slice's chips shaped by config.mesh, fed an
abstract batch of the shapes the config's objective makes. XLA lays out
every buffer of the SPMD program, so the memory it reports is one chip's; a
program that cannot fit in HBM fails to compile with the compiler's message.
Either way, a step that does not fit exits with one line: by how many GiB it
exceeds the chip's usable HBM, and the mesh layout, microbatches or remat that
tools/plan's estimates (scaled to what this compile needed) say would fit.
"""
import contextlib
import dataclasses
import os
import re
import sys
import time

import jax
import ml_collections
from absl import app, flags
from jax.experimental import topologies
from ml_collections import config_flags

from tools import plan
from train import cli, hardware, sharding
from train.experiment import Experiment

def topology_devices(topology: hardware.Topology) -> list:
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


def experiment(config: ml_collections.ConfigDict, topology: hardware.Topology,
               devices) -> Experiment:
  """`config` on a mesh of the slice's chips, checked as train/main.py checks it, with the
  slice's host count; each mesh axis must be whole sides of the torus."""
  try:
    built = Experiment(config, devices)
  except NotImplementedError as e:  # jax.make_mesh: an axis would split a side of the torus
    sizes = {a: config.mesh[a] for a in sharding.MESH_AXES}
    raise ValueError(f"config.mesh={sizes} does not map onto the {topology.name} torus: each "
                     f"mesh axis must be a product of whole sides of {topology.shape} "
                     f"({str(e).splitlines()[0][:80]}...)") from None
  hosts = max(d.process_index for d in built.mesh.devices.flat) + 1
  if config.train.batch_size % hosts:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} does not divide over "
                     f"the {hosts} hosts of {topology.name}; use a multiple of {hosts}")
  return built


def compile_step(built: Experiment):
  """(compiled train step, seconds to lower and compile), for an abstract state and batch."""
  start = time.perf_counter()
  try:
    compiled = built.compile_train_step()
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
    return int(float(match[1]) * hardware.GiB) if match else None


def compiled_flops(compiled) -> float:
  """FLOPs of one chip's program as XLA counts them (a loop body once, whatever its trips)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one dict per program
  return float(cost.get("flops", 0.0))


def layer_counted_flops(config: ml_collections.ConfigDict, topology: hardware.Topology,
                        devices) -> float:
  """Compiled FLOPs of `config` with every layer counted, for scanned layers.

  XLA's cost analysis counts the scan's body once, so the step is compiled
  unrolled with every stack 1 layer deep, and with each stack in turn 2 deep, and
  each stack's per-layer difference is extrapolated to its depth.
  """
  stacks = experiment(config, topology, devices).stacks

  def flops(deeper=None):
    c = config.copy_and_resolve_references()
    c.model.scan_layers = False
    for stack in stacks:
      c.model[stack.depth_field] = 2 if stack is deeper else 1
    return compiled_flops(compile_step(experiment(c, topology, devices))[0])

  one = flops()
  return one + sum((stack.layers - 1) * (flops(stack) - one) for stack in stacks)


@dataclasses.dataclass(frozen=True)
class Report:
  """Per-chip figures of one compiled step."""
  topology: hardware.Topology
  mesh: dict
  num_params: int
  arguments: int  # bytes: state + batch shards
  outputs: int  # new state + metrics
  aliased: int  # outputs written over donated arguments (the state), counted once
  temporaries: int
  code: int
  compiled_flops: float  # as XLA counts them: a scanned layer once
  counted_flops: float | None  # every layer counted; None if scanned and not counted
  model_flops: float  # Experiment.flops_per_step, over the chips
  compile_seconds: float

  @property
  def total(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

  @property
  def fits(self) -> bool:
    return self.total <= self.topology.usable_bytes


@contextlib.contextmanager
def _persistent_cache_off():
  """JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR) cannot load what a
  compile-only TPU client compiles: with it on, every compile here would warn and compile."""
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", enabled)


def measure(config: ml_collections.ConfigDict, topology: hardware.Topology, devices=None, *,
            count_layers: bool = True) -> Report:
  """Compiles `config`'s train step for `topology` and reads one chip's memory and FLOPs.

  count_layers: for scanned layers, also compile shallow unrolled copies to count
  every layer's FLOPs (see layer_counted_flops); else that figure is XLA's own.
  """
  devices = topology_devices(topology) if devices is None else devices
  with _persistent_cache_off():
    built = experiment(config, topology, devices)
    compiled, seconds = compile_step(built)
    counted = flops = compiled_flops(compiled)
    if config.model.scan_layers:
      counted = layer_counted_flops(config, topology, devices) if count_layers else None
  memory = compiled.memory_analysis()
  model_flops = built.flops_per_step / topology.chips
  return Report(topology=topology, mesh=dict(built.mesh.shape), num_params=built.num_params,
                arguments=memory.argument_size_in_bytes, outputs=memory.output_size_in_bytes,
                aliased=memory.alias_size_in_bytes, temporaries=memory.temp_size_in_bytes,
                code=memory.generated_code_size_in_bytes, compiled_flops=flops,
                counted_flops=counted, model_flops=model_flops, compile_seconds=seconds)


def format_report(r: Report) -> str:
  t = r.topology
  gib = lambda b: f"{b / hardware.GiB:8.2f} GiB"
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
  flags.DEFINE_string("topology", None, f"TPU slice: {hardware.TOPOLOGY_HELP}.")
  flags.DEFINE_bool("count_layers", True, "With scanned layers, also compile 1- and 2-layer "
                    "unrolled copies to count every layer's FLOPs (XLA counts a loop body once).")
  flags.mark_flags_as_required(["config", "topology"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  try:
    topology = hardware.parse_topology(flags.FLAGS.topology)
    hardware.quiet_libtpu(topology)
    report = measure(config, topology, count_layers=flags.FLAGS.count_layers)
  except OutOfHbm as e:
    sys.exit(f"error: {str(e).rstrip('.')}; "
             f"{plan.what_to_change(config, topology, e.needed_bytes, at_least=True)}")
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(format_report(report))
  if not report.fits:
    sys.exit(f"error: the step does not fit: {plan.what_to_change(config, topology, report.total)}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
