"""The train step and the eval step: pure functions of (state, batch).

Steps return sums (not means) of what the task counts, so metrics over several
batches or hosts are exact ratios of sums. The task (train/tasks.py) says what the
loss and the sums are; train/experiment.py jits these with their shardings.
"""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from model.layers import activation_sharding
from train.state import TrainState


def metric_sums(params, graphdef: nnx.GraphDef, batch: dict, task, dropout_key=None) -> dict:
  """The task's sums over the batch (its loss sum among them), dropout keyed if given."""
  model = nnx.merge(graphdef, params)
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  return task.metric_sums(model, batch, rngs)


def _microbatches(batch: dict, count: int) -> dict:
  """[B, ...] -> [count, B / count, ...], microbatch m taking rows m, m + count, ...

  Strided, not contiguous: each device's share of the batch is spread over all
  microbatches, so every microbatch keeps every device busy.
  """
  return jax.tree.map(lambda x: x.reshape(-1, count, *x.shape[1:]).swapaxes(0, 1), batch)


def _loss_sum_and_sums(params, graphdef, batch, task, key, scale):
  sums = metric_sums(params, graphdef, batch, task, key)
  return sums[task.LOSS[0]] * scale, sums


def summed_grads(params, graphdef, batch: dict, task, key, microbatches: int, scale):
  """(gradient of the summed loss times `scale`, the task's sums), accumulated over
  `microbatches` in float32."""
  grad_fn = jax.grad(_loss_sum_and_sums, has_aux=True)
  if microbatches == 1:
    return grad_fn(params, graphdef, batch, task, key, scale)

  def accumulate(carry, inputs):
    micro, index = inputs
    micro_key = None if key is None else jax.random.fold_in(key, index)
    grads, sums = grad_fn(params, graphdef, micro, task, micro_key, scale)
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  zero_sums = {k: jnp.zeros((), jnp.float32) for k in task.SUMS}
  (grads, sums), _ = jax.lax.scan(accumulate, (zeros, zero_sums),
                                  (_microbatches(batch, microbatches), jnp.arange(microbatches)))
  return grads, sums


def train_step(state: TrainState, batch: dict, *, graphdef, tx, task, seed: int, dropout: bool,
               microbatches: int = 1, nan_step: int = -1):
  """One optimizer step on the task's mean loss over the batch.

  With microbatches > 1 the gradient is accumulated, so the update equals the
  full batch's. Dropout keys derive from (seed, step), never from global state.
  A non-finite loss or gradient leaves params and optimizer state as they were;
  metrics["nonfinite"] counts it and metrics["nonfinite_step"] names the step.
  """
  key = jax.random.fold_in(jax.random.key(seed), state.step) if dropout else None
  # Testing the guard: NaN at nan_step, 1 elsewhere. It scales the loss that is
  # differentiated, so every step's program is the same with or without a NaN step,
  # and it costs one multiply, not one per gradient array.
  poison = jnp.where(state.step + 1 == nan_step, jnp.nan, 1.0)
  grads, sums = summed_grads(state.params, graphdef, batch, task, key, microbatches, poison)
  total, count = task.LOSS
  count = jnp.maximum(sums[count], 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  loss, grad_norm = sums[total] / count, optax.global_norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep_if_bad = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  metrics = dict(sums, loss=loss, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.float32),
                 nonfinite_step=jnp.where(finite, 0, state.step + 1))
  return state.replace(step=state.step + 1, params=keep_if_bad(params, state.params),
                       opt_state=keep_if_bad(opt_state, state.opt_state)), metrics


def eval_step(params, batch: dict, *, graphdef, task):
  return metric_sums(params, graphdef, batch, task)


def with_activation_rules(fn, mesh, rules):
  """fn traced with the model's activations pinned by `rules` (none if rules is empty)."""
  if not rules:
    return fn

  def constrained(*args):
    with activation_sharding(mesh, rules):
      return fn(*args)
  return constrained
