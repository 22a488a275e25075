"""The loss, the train step and the eval step: pure functions of (state, batch).

Steps return sums (not means) of what they count, so metrics over several
batches or hosts are exact ratios of sums.
"""
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from train.state import TrainState


def loss_and_sums(params, graphdef: nnx.GraphDef, batch: dict, dropout_key=None):
  """Mean cross-entropy over weighted targets, and the sums behind the metrics."""
  model = nnx.merge(graphdef, params)
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  # [B, T, V]
  names = model.INPUTS + tuple(n for n in model.OPTIONAL_INPUTS if n in batch)
  logits = model(**{name: batch[name] for name in names}, rngs=rngs)
  # [B, T]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  weights = batch["weights"]
  correct = (jnp.argmax(logits, -1) == batch["targets"]) * weights
  sums = {"nll": (nll * weights).sum(), "tokens": weights.sum(), "correct": correct.sum(),
          "bytes": batch["target_bytes"].sum().astype(jnp.float32)}
  return sums["nll"] / jnp.maximum(sums["tokens"], 1.0), sums


def train_step(state: TrainState, batch: dict, *, graphdef, tx, seed: int, dropout: bool):
  """One optimizer step; dropout keys derive from (seed, step), never from global state."""
  key = jax.random.fold_in(jax.random.key(seed), state.step) if dropout else None
  grad_fn = jax.value_and_grad(loss_and_sums, has_aux=True)
  (loss, sums), grads = grad_fn(state.params, graphdef, batch, key)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(sums, loss=loss, grad_norm=optax.global_norm(grads))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch: dict, *, graphdef):
  return loss_and_sums(params, graphdef, batch)[1]


def jit_train_step(graphdef, tx, seed: int, dropout: bool, state_shardings, batch_sharding):
  """train_step jitted with explicit shardings; the old state's buffers are donated."""
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, seed=seed, dropout=dropout)
  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)


def jit_eval_step(graphdef, param_shardings, batch_sharding):
  return jax.jit(functools.partial(eval_step, graphdef=graphdef),
                 in_shardings=(param_shardings, batch_sharding))
