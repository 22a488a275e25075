"""The loss, the train step and the eval step: pure functions of (state, batch).

Steps return sums (not means) of what they count, so metrics over several
batches or hosts are exact ratios of sums.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from model import model_config, train_flops_per_row
from model.layers import activation_sharding
from train import loss, objectives
from train.state import TrainState


def metric_sums(params, graphdef: nnx.GraphDef, batch: dict, dropout_key=None, *,
                max_scored: int = 0, loss_chunk: int = 0) -> dict:
  """Sums over the batch of the weighted cross-entropy ("nll") and of what metrics count.

  max_scored > 0: logits only for that many positions per row (see train.loss);
  loss_chunk > 0: logits for that many positions at a time.
  """
  model = nnx.merge(graphdef, params)
  rngs = None if dropout_key is None else nnx.Rngs(dropout=dropout_key)
  names = model.INPUTS + tuple(n for n in model.OPTIONAL_INPUTS if n in batch)
  # [B, T, D]
  hidden = model.hidden(**{name: batch[name] for name in names}, rngs=rngs)
  # [B, T] each
  targets, weights = batch["targets"], batch["weights"]
  if max_scored:
    hidden, targets, weights = loss.select_scored(hidden, targets, weights, max_scored)
  nll, correct = loss.cross_entropy_sums(model.logits, hidden, targets, weights, loss_chunk)
  return {"nll": nll, "tokens": weights.sum(), "correct": correct,
          "bytes": batch["target_bytes"].sum().astype(jnp.float32)}


def _microbatches(batch: dict, count: int) -> dict:
  """[B, ...] -> [count, B / count, ...], microbatch m taking rows m, m + count, ...

  Strided, not contiguous: each device's share of the batch is spread over all
  microbatches, so every microbatch keeps every device busy.
  """
  return jax.tree.map(lambda x: x.reshape(-1, count, *x.shape[1:]).swapaxes(0, 1), batch)


def scoring(config: ml_collections.ConfigDict) -> dict:
  """metric_sums' static options for `config`: positions per row its objective can score,
  and the loss chunk."""
  return {"max_scored": objectives.make(config).max_scored,
          "loss_chunk": config.train.loss_chunk}


def model_flops_per_step(config: ml_collections.ConfigDict) -> float:
  """Training FLOPs of one step on the global batch, by the model's own count (for MFU)."""
  return config.train.batch_size * train_flops_per_row(
      model_config(config), *objectives.row_lengths(config),
      scored=objectives.make(config).max_scored, prefix=config.objective == "prefix_lm")


def _nll_and_sums(params, graphdef, batch, key, scoring):
  sums = metric_sums(params, graphdef, batch, key, **scoring)
  return sums["nll"], sums


def summed_grads(params, graphdef, batch: dict, key, microbatches: int, scoring: dict):
  """(gradient of the summed nll, metric sums), accumulated over `microbatches` in float32."""
  grad_fn = jax.grad(_nll_and_sums, has_aux=True)
  if microbatches == 1:
    return grad_fn(params, graphdef, batch, key, scoring)

  def accumulate(carry, inputs):
    micro, index = inputs
    micro_key = None if key is None else jax.random.fold_in(key, index)
    grads, sums = grad_fn(params, graphdef, micro, micro_key, scoring)
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  zero_sums = {k: jnp.zeros((), jnp.float32) for k in ("nll", "tokens", "correct", "bytes")}
  (grads, sums), _ = jax.lax.scan(accumulate, (zeros, zero_sums),
                                  (_microbatches(batch, microbatches), jnp.arange(microbatches)))
  return grads, sums


def train_step(state: TrainState, batch: dict, *, graphdef, tx, seed: int, dropout: bool,
               microbatches: int = 1, nan_step: int = -1, scoring: dict | None = None):
  """One optimizer step on the mean loss over the batch's weighted targets.

  With microbatches > 1 the gradient is accumulated, so the update equals the
  full batch's. Dropout keys derive from (seed, step), never from global state.
  A non-finite loss or gradient leaves params and optimizer state as they were;
  metrics["nonfinite"] counts it and metrics["nonfinite_step"] names the step.
  """
  key = jax.random.fold_in(jax.random.key(seed), state.step) if dropout else None
  grads, sums = summed_grads(state.params, graphdef, batch, key, microbatches, scoring or {})
  tokens = jnp.maximum(sums["tokens"], 1.0)
  poison = jnp.where(state.step + 1 == nan_step, jnp.nan, 1.0)  # testing the guard only
  grads = jax.tree.map(lambda g: g / tokens * poison, grads)
  loss, grad_norm = sums["nll"] / tokens, optax.global_norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep_if_bad = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  metrics = dict(sums, loss=loss, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.float32),
                 nonfinite_step=jnp.where(finite, 0, state.step + 1))
  return state.replace(step=state.step + 1, params=keep_if_bad(params, state.params),
                       opt_state=keep_if_bad(opt_state, state.opt_state)), metrics


def eval_step(params, batch: dict, *, graphdef, scoring: dict | None = None):
  return metric_sums(params, graphdef, batch, **(scoring or {}))


def _with_activation_rules(fn, mesh, rules):
  """fn traced with the model's activations pinned by `rules` (none if rules is empty)."""
  if not rules:
    return fn

  def constrained(*args):
    with activation_sharding(mesh, rules):
      return fn(*args)
  return constrained


def jit_train_step(graphdef, tx, seed: int, dropout: bool, state_shardings, batch_sharding,
                   microbatches: int = 1, nan_step: int = -1, rules=(),
                   scoring: dict | None = None):
  """train_step jitted with explicit shardings; the old state's buffers are donated.

  `rules` (config.sharding.rules) also lay out the activations between blocks,
  which FSDP needs so that each chip computes only its rows. `scoring`: see `scoring`.
  """
  step = _with_activation_rules(functools.partial(
      train_step, graphdef=graphdef, tx=tx, seed=seed, dropout=dropout,
      microbatches=microbatches, nan_step=nan_step, scoring=scoring), batch_sharding.mesh, rules)
  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)


def jit_eval_step(graphdef, param_shardings, batch_sharding, rules=(),
                  scoring: dict | None = None):
  step = _with_activation_rules(functools.partial(eval_step, graphdef=graphdef, scoring=scoring),
                                batch_sharding.mesh, rules)
  return jax.jit(step,
                 in_shardings=(param_shardings, batch_sharding))
