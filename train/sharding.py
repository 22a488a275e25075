"""Mesh, logical-axis rules and every sharding of the run, computed in one place.

Mesh axes are `data`, `fsdp`, `tensor`. Parameters carry logical axis names
(model/layers.py); the rules in `config.sharding.rules` map each name to mesh
axes. The batch dimension is sharded over the mesh axes that `batch` maps to.
"""
from typing import Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Sizes of (data, fsdp, tensor); one -1 takes what the others leave."""
  sizes = [mesh_cfg[a] for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))}: sizes must be positive, "
                     "with at most one -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))} does not divide the "
                       f"{num_devices} devices; make the fixed sizes divide {num_devices}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
                     f"devices but {num_devices} are present; set one axis to -1 or match the count")
  return tuple(sizes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  # Auto axes: XLA propagates shardings from the annotated inputs and outputs.
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def rules(config: ml_collections.ConfigDict) -> Rules:
  """config.sharding.rules as a tuple of (logical name, mesh axes) pairs."""
  return tuple((name, axes) for name, axes in config.sharding.rules)


def logical_to_mesh(names: Sequence[str | None], rules: Rules) -> P:
  """PartitionSpec over mesh axes for one array's logical axis names."""
  return nn.logical_to_mesh_axes(tuple(names), rules)


def check_rules(logical_specs, shapes, rules: Rules, mesh: Mesh) -> None:
  """Every logical name has a rule, and every sharded dimension divides by its mesh axes."""
  known = {name for name, _ in rules}
  paths_specs = jax.tree_util.tree_flatten_with_path(logical_specs)[0]
  for (path, spec), shape in zip(paths_specs, jax.tree.leaves(shapes)):
    where = jax.tree_util.keystr(path)
    missing = [n for n in spec if n is not None and n not in known]
    if missing:
      raise ValueError(f"parameter {where} has logical axes {missing} with no rule in "
                       "config.sharding.rules; add (name, mesh_axes) pairs for them")
    for dim, axes in zip(shape.shape, logical_to_mesh(spec, rules)):
      axes = (axes,) if isinstance(axes, str) else (axes or ())
      size = int(np.prod([mesh.shape[a] for a in axes]))
      if dim % size:
        raise ValueError(f"parameter {where} dimension {dim} is split over mesh axes {axes} "
                         f"of total size {size}, which does not divide it; change the mesh or "
                         "the rules")


def tree_shardings(logical_specs, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree of logical PartitionSpecs."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, logical_to_mesh(spec, rules)),
                      logical_specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Rows split over the mesh axes of `batch`; the length dimension whole."""
  return NamedSharding(mesh, logical_to_mesh(("batch", "length"), rules))


def batch_divisor(mesh: Mesh, rules: Rules) -> int:
  """How many shards the global batch is split into."""
  axes = logical_to_mesh(("batch",), rules)[0]
  axes = (axes,) if isinstance(axes, str) else (axes or ())
  return int(np.prod([mesh.shape[a] for a in axes]))


def programs_may_interleave() -> bool:
  """True where two programs with collectives must not be in flight at once: several JAX
  processes on CPU, exchanging collectives over gloo.

  There each device runs its part of a program on a thread pool, so two programs that do
  not depend on each other (eval steps on the same params) can start in different orders
  on different devices, each then waiting in an all-reduce for the other: 2 processes with
  2 CPU devices each hung so within a few eval steps (jax 0.10.2). On TPU and GPU each
  device runs its programs in launch order; train steps depend on each other anyway.
  """
  return jax.process_count() > 1 and jax.default_backend() == "cpu"


def to_global(local_batch: dict, sharding: NamedSharding) -> dict:
  """This host's numpy rows -> global jax.Arrays laid out by `sharding`."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
