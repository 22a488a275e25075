"""The train state and its shardings, created on the mesh without ever being whole on one host."""
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from model import build_model, model_config
from train import checkpoint, optim, sharding, validation


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # nested dict of arrays, named as the model's attributes
  opt_state: Any


def model_graphdef(model_cfg) -> nnx.GraphDef:
  """The model's structure without values; merged with params inside the step."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(model_cfg, 0)), nnx.Param)
  return graphdef


def param_logical_specs(model_cfg):
  """Logical PartitionSpec of every parameter, as a nested dict like params."""
  abstract = nnx.eval_shape(lambda: build_model(model_cfg, 0))
  return nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(abstract, nnx.Param)))


def init_state(model_cfg, tx: optax.GradientTransformation, seed: int) -> TrainState:
  params = nnx.to_pure_dict(nnx.state(build_model(model_cfg, seed), nnx.Param))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def state_shardings(model_cfg, tx, mesh: Mesh, rules) -> tuple[TrainState, TrainState]:
  """(abstract state, its NamedShardings); checks the rules cover every parameter."""
  abstract = jax.eval_shape(lambda: init_state(model_cfg, tx, 0))
  logical = param_logical_specs(model_cfg)
  sharding.check_rules(logical, abstract.params, rules, mesh)
  param_shardings = sharding.tree_shardings(logical, mesh, rules)
  replicated = NamedSharding(mesh, P())
  # Optimizer moments mirror the params and take their shardings; counters replicate.
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, abstract.opt_state, param_shardings,
      transform_non_params=lambda _: replicated)
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
  return abstract, shardings


def create_state(model_cfg, tx, seed: int, shardings: TrainState) -> TrainState:
  """A fresh state, each array initialised directly in its shards."""
  return jax.jit(lambda: init_state(model_cfg, tx, seed), out_shardings=shardings)()


def restore_state(config, workdir: str, step: int | None = None) -> tuple[nnx.GraphDef, TrainState]:
  """(graphdef, state) that the run in `workdir` saved at `step` (default: its latest), laid
  out on this machine's mesh (`config.mesh`), whatever mesh trained it. Reads nothing else
  (not the data iterator) and writes nothing."""
  if not os.path.isdir(checkpoint.directory(workdir)):
    raise ValueError(f"{workdir} holds no checkpoints; train it first")
  validation.check_workdir_config(workdir, config)  # a different config would not fit
  model_cfg = model_config(config)
  # The optimizer state is saved with the params; restoring needs its structure.
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple((name, axes) for name, axes in config.sharding.rules)
  abstract, shardings = state_shardings(model_cfg, tx, mesh, rules)
  checkpointer = checkpoint.Checkpointer.for_run(workdir, config)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"{checkpoint.directory(workdir)} holds no finished checkpoint; "
                       "train it first")
    state = checkpointer.restore(step, abstract, shardings)
  finally:
    checkpointer.close()
  return model_graphdef(model_cfg), state


def restore_params(config, workdir: str, step: int | None = None) -> tuple[nnx.GraphDef, Any]:
  """(graphdef, params) of `restore_state`: for inference from Python (notebooks)."""
  graphdef, state = restore_state(config, workdir, step)
  return graphdef, state.params
