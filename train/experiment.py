"""One experiment, built once from its config: what the run, its evaluations and every tool share.

`Experiment(config)` checks the config (before any data is read or anything is compiled)
and holds the mesh, the sharding rules, the model config and family, the objective and
the task, the optimizer and its schedule, the abstract state and its shardings, the
batch's shapes and sharding, the graphdef, the step's FLOPs and tokens, and makes the
jitted and compiled train and eval steps and the state (fresh or restored).
"""
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from model import (FAMILIES, abstract_model, build_model, count_params, model_config,
                   model_graphdef, train_flops_per_row)
from model import lora
from train import (checkpoint, hardware, host_memory, init_from, optim, sharding, tasks,
                   trainable, validation)
from train import step as step_lib
from train.state import TrainState


class Experiment:
  """The pieces of one run of `config` on `devices` (default: every device of every host),
  or on a given `mesh` (an AbstractMesh for shapes and shardings without devices)."""

  def __init__(self, config: ml_collections.ConfigDict, devices=None, *, mesh=None):
    self.config = config
    validation.check_fields(config)  # before the mesh reads its sizes
    self.mesh = sharding.make_mesh(config.mesh, devices) if mesh is None else mesh
    self.rules = sharding.rules(config)
    validation.validate(config, sharding.batch_divisor(self.mesh, self.rules))
    self.model_cfg = model_config(config)
    self.family = FAMILIES[self.model_cfg.family]
    self.task = tasks.make(config)
    self.trainable = trainable.Trainable(config.train.trainable, config.train.frozen)
    self.trainable.check(self.abstract_params)
    lora.check_targets(self.model_cfg, init_from.param_paths(self.abstract_params))
    self.tx = optim.make_optimizer(config.optim, config.train.num_steps, self.trainable)
    self.lr_schedule = optim.learning_rate_schedule(config.optim, config.train.num_steps)
    self.batch_sharding = sharding.batch_sharding(self.mesh, self.rules)

  # ---------------------------------------------------------------- model and state
  @functools.cached_property
  def graphdef(self) -> nnx.GraphDef:
    """The model's structure without values; merged with params inside the steps."""
    return model_graphdef(self.model_cfg)

  @functools.cached_property
  def num_params(self) -> int:
    return count_params(self.model_cfg)

  @functools.cached_property
  def abstract_params(self) -> dict:
    """The parameters' shapes and dtypes, named as in the state."""
    return nnx.to_pure_dict(nnx.state(abstract_model(self.model_cfg), nnx.Param))

  def _init_state(self, seed: int) -> TrainState:
    params = nnx.to_pure_dict(nnx.state(build_model(self.model_cfg, seed), nnx.Param))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params))

  @functools.cached_property
  def _state_layout(self) -> tuple[TrainState, TrainState]:
    abstract = jax.eval_shape(lambda: self._init_state(0))
    model = abstract_model(self.model_cfg)
    logical = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    sharding.check_rules(logical, abstract.params, self.rules, self.mesh)
    params = sharding.tree_shardings(logical, self.mesh, self.rules)
    replicated = NamedSharding(self.mesh, P())
    # Optimizer moments mirror the params and take their shardings; counters replicate.
    opt_state = optax.tree_map_params(self.tx, lambda _, s: s, abstract.opt_state,
                                      self.trainable.masked(params),
                                      transform_non_params=lambda _: replicated)
    return abstract, TrainState(step=replicated, params=params, opt_state=opt_state)

  @property
  def abstract_state(self) -> TrainState:
    """The state's shapes and dtypes, allocating nothing."""
    return self._state_layout[0]

  @property
  def state_shardings(self) -> TrainState:
    """NamedShardings of the state on the mesh (the rules checked against every parameter)."""
    return self._state_layout[1]

  def create_state(self, seed: int | None = None) -> TrainState:
    """A fresh state (default seed: the config's), each array initialised in its shards."""
    seed = self.config.seed if seed is None else seed
    state = jax.jit(lambda: self._init_state(seed), out_shardings=self.state_shardings)()
    host_memory.release_freed_memory()  # what compiling the initialisation freed
    return state

  def restore(self, workdir: str, step: int | None = None) -> TrainState:
    """The state the run in `workdir` saved at `step` (default: its latest), laid out on this
    mesh, whatever mesh trained it. Reads nothing else (not the data position); writes
    nothing."""
    if not os.path.isdir(checkpoint.directory(workdir)):
      raise ValueError(f"{workdir} holds no checkpoints; train it first")
    validation.check_workdir_config(workdir, self.config)  # a different config would not fit
    checkpointer = checkpoint.Checkpointer.for_run(workdir, self.config)
    try:
      step = checkpointer.latest_step() if step is None else step
      if step is None:
        raise ValueError(f"{checkpoint.directory(workdir)} holds no finished checkpoint; "
                         "train it first")
      return checkpointer.restore(step, self.abstract_state, self.state_shardings)
    finally:
      checkpointer.close()

  # ---------------------------------------------------------------- batches and cost
  @functools.cached_property
  def batch_spec(self) -> dict:
    """The global train batch as shapes: the fields of the task's examples."""
    rows = self.config.train.batch_size
    return {name: jax.ShapeDtypeStruct((rows, length), dtype, sharding=self.batch_sharding)
            for name, (length, dtype) in self.task.example_shapes().items()}

  @functools.cached_property
  def flops_per_step(self) -> float:
    """Training FLOPs of one step on the global batch, by the model's own count (for MFU)."""
    return self.config.train.batch_size * train_flops_per_row(
        self.model_cfg, *self.task.lengths, scored=self.task.max_scored,
        prefix=self.task.bidirectional_prefix)

  @property
  def stacks(self) -> tuple:
    """The model's stacks over a training row (model/cost.StackShape), as its family says."""
    return self.family.stacks(self.model_cfg, *self.task.lengths,
                              prefix=self.task.bidirectional_prefix)

  @property
  def tokens_per_step(self) -> int:
    return self.config.train.batch_size * sum(self.task.lengths)

  # ---------------------------------------------------------------- steps
  def jit_train_step(self):
    """step_lib.train_step jitted with the state's and batch's shardings; the old state's
    buffers are donated. The rules also lay out the activations between blocks, which
    FSDP needs so that each chip computes only its rows."""
    t = self.config.train
    step = step_lib.with_activation_rules(functools.partial(
        step_lib.train_step, graphdef=self.graphdef, tx=self.tx, task=self.task,
        seed=self.config.seed, dropout=self.model_cfg.dropout_rate > 0,
        microbatches=t.microbatches, nan_step=t.inject_nan_at_step), self.mesh, self.rules)
    platform = self.mesh.devices.flat[0].platform if isinstance(self.mesh, Mesh) else None
    return jax.jit(step, in_shardings=(self.state_shardings, self.batch_sharding),
                   out_shardings=(self.state_shardings, None), donate_argnums=0,
                   compiler_options=hardware.step_compiler_options(platform))

  def jit_eval_step(self, param_shardings=None):
    """step_lib.eval_step jitted; params laid out as the state's (or `param_shardings`)."""
    step = step_lib.with_activation_rules(functools.partial(
        step_lib.eval_step, graphdef=self.graphdef, task=self.task), self.mesh, self.rules)
    params = self.state_shardings.params if param_shardings is None else param_shardings
    return jax.jit(step, in_shardings=(params, self.batch_sharding))

  def compile_train_step(self, state=None):
    """The train step compiled ahead of time for the config's batch: it rejects any other
    shape, so it never recompiles."""
    state = self.abstract_state if state is None else state
    compiled = self.jit_train_step().lower(state, self.batch_spec).compile()
    host_memory.release_freed_memory()  # the compiler's, before the step's buffers come
    return compiled

  def compile_eval_step(self, params=None):
    params = self.abstract_state.params if params is None else params
    compiled = self.jit_eval_step().lower(params, self.batch_spec).compile()
    host_memory.release_freed_memory()
    return compiled
