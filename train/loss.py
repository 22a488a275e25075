"""Summed cross-entropy and accuracy from hidden states, scoring only what counts.

The vocabulary projection is the largest tensor of a small model's step
([B, T, V] float32). Here it is made only for positions that carry weight
(`max_scored`: masked-LM scores ~15% of a row) and, with `chunk`, a block of
positions at a time, recomputed in the backward pass, so at most [B, chunk, V]
logits are alive at once.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def select_scored(hidden: jax.Array, targets: jax.Array, weights: jax.Array, max_scored: int):
  """The `max_scored` positions per row with the largest weights: every weighted position when
  a row has at most `max_scored` of them (the objective guarantees it).

  hidden [B, T, D], targets [B, T], weights [B, T] -> [B, K, D], [B, K], [B, K].
  """
  # [B, K]
  _, index = jax.lax.top_k(weights, max_scored)
  take = lambda x: jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)),
                                       axis=1)
  return take(hidden), take(targets), take(weights)


def _block_sums(logits_fn, hidden, targets, weights):
  # hidden [B, C, D]; targets, weights [B, C]
  # [B, C, V]
  logits = logits_fn(hidden)
  # [B, C]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = jax.nn.logsumexp(logits, axis=-1) - target_logit
  # Correct when the target's logit is the largest (what argmax would pick, up to ties),
  # which reuses the max that logsumexp takes instead of a separate argmax pass.
  correct = target_logit >= jnp.max(logits, axis=-1)
  return (nll * weights).sum(), (correct * weights).sum()


def _argmax_block_sums(logits_fn, hidden, targets, weights):
  """As _block_sums, with optax's cross-entropy and a separate argmax for accuracy: the
  textbook form, kept to measure what _block_sums buys (tools/benchmark)."""
  # [B, C, V]
  logits = logits_fn(hidden)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = jnp.argmax(logits, -1) == targets
  return (nll * weights).sum(), (correct * weights).sum()


def cross_entropy_sums(logits_fn: Callable[[jax.Array], jax.Array], hidden: jax.Array,
                       targets: jax.Array, weights: jax.Array, chunk: int = 0,
                       accuracy_from_max: bool = True):
  """(sum of weighted nll, sum of weights of correctly predicted positions).

  hidden [B, T, D]; targets, weights [B, T]. logits_fn maps [..., D] -> [..., V] float32.
  chunk > 0 (dividing T): logits made `chunk` positions at a time, along T so that a
  batch sharded over rows stays sharded. accuracy_from_max=False: the textbook form.
  """
  length = hidden.shape[1]
  sums_of = _block_sums if accuracy_from_max else _argmax_block_sums
  if not chunk or chunk >= length:
    return sums_of(logits_fn, hidden, targets, weights)
  if length % chunk:
    raise ValueError(f"train.loss_chunk={chunk} must divide the scored length {length}")
  blocks = lambda x: jnp.moveaxis(x.reshape(x.shape[0], length // chunk, chunk, *x.shape[2:]),
                                  1, 0)
  block_sums = jax.checkpoint(lambda h, t, w: sums_of(logits_fn, h, t, w))

  def add_block(carry, block):
    nll, correct = block_sums(*block)
    return (carry[0] + nll, carry[1] + correct), None

  zero = jnp.zeros((), jnp.float32)
  (nll, correct), _ = jax.lax.scan(add_block, (zero, zero),
                                   (blocks(hidden), blocks(targets), blocks(weights)))
  return nll, correct


def target_sums(model, batch: dict, max_scored: int, train, rngs=None) -> dict:
  """{"nll", "tokens", "correct"}: sums over `batch` of the weighted targets' cross-entropy,
  weight and correct predictions, by `model` (its INPUTS and the OPTIONAL_INPUTS present),
  projecting at most `max_scored` positions a row (0: all) in train.loss_chunk blocks."""
  names = model.INPUTS + tuple(n for n in model.OPTIONAL_INPUTS if n in batch)
  # [B, T, D]
  hidden = model.hidden(**{name: batch[name] for name in names}, rngs=rngs)
  # [B, T] each
  targets, weights = batch["targets"], batch["weights"]
  if max_scored:
    hidden, targets, weights = select_scored(hidden, targets, weights, max_scored)
  nll, correct = cross_entropy_sums(model.logits, hidden, targets, weights, train.loss_chunk,
                                    train.accuracy_from_max)
  return {"nll": nll, "tokens": weights.sum(), "correct": correct}
