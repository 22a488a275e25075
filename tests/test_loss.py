"""The step's fast paths equal the plain computations they replace (fp32).

Tolerances: the fast paths reorder float32 sums over at most a few thousand
terms, so values and gradients agree to ~1e-6 relative; 1e-5 leaves room.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model.attention import attend
from train import loss

B, T, D, V = 3, 16, 8, 50


def _logits_fn(table):
  return lambda hidden: jnp.einsum("...D,VD->...V", hidden, table)


def _reference_sums(table, hidden, targets, weights):
  logits = _logits_fn(table)(hidden)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = jnp.argmax(logits, -1) == targets
  return (nll * weights).sum(), (correct * weights).sum()


@pytest.fixture(name="case")
def _case():
  keys = jax.random.split(jax.random.key(0), 4)
  table = jax.random.normal(keys[0], (V, D))
  hidden = jax.random.normal(keys[1], (B, T, D))
  targets = jax.random.randint(keys[2], (B, T), 0, V)
  weights = (jax.random.uniform(keys[3], (B, T)) < 0.3).astype(jnp.float32)
  return table, hidden, targets, weights


@pytest.mark.parametrize("chunk", [0, 4, 8, 16])
def test_cross_entropy_sums_equal_optax_and_argmax_in_any_chunking(case, chunk):
  table, hidden, targets, weights = case
  total = lambda t, h: loss.cross_entropy_sums(_logits_fn(t), h, targets, weights, chunk)
  ref = lambda t, h: _reference_sums(t, h, targets, weights)
  (nll, correct), (ref_nll, ref_correct) = total(table, hidden), ref(table, hidden)
  np.testing.assert_allclose(nll, ref_nll, rtol=1e-5)
  assert correct == ref_correct
  grads = jax.grad(lambda t, h: total(t, h)[0], (0, 1))(table, hidden)
  ref_grads = jax.grad(lambda t, h: ref(t, h)[0], (0, 1))(table, hidden)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_a_chunk_that_does_not_divide_the_length_is_refused(case):
  table, hidden, targets, weights = case
  with pytest.raises(ValueError, match="loss_chunk=5 must divide"):
    loss.cross_entropy_sums(_logits_fn(table), hidden, targets, weights, 5)


def test_scoring_only_the_selected_positions_changes_nothing(case):
  table, hidden, targets, weights = case
  most = int(weights.sum(-1).max())
  selected = loss.select_scored(hidden, targets, weights, most)
  assert selected[0].shape == (B, most, D) and float(selected[2].sum()) == float(weights.sum())
  full = lambda t, h: loss.cross_entropy_sums(_logits_fn(t), h, targets, weights)[0]
  only = lambda t, h: loss.cross_entropy_sums(
      _logits_fn(t), *loss.select_scored(h, targets, weights, most))[0]
  np.testing.assert_allclose(only(table, hidden), full(table, hidden), rtol=1e-5)
  for g, r in zip(jax.grad(only, (0, 1))(table, hidden), jax.grad(full, (0, 1))(table, hidden)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kv_heads", [6, 2, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_einsum_attention_equals_jax_nn_attention(kv_heads, with_bias):
  """Multi-head, grouped and multi-query; packed segments, padding and a dense bias."""
  keys = jax.random.split(jax.random.key(1), 4)
  b, t, s, n, h = 2, 7, 9, 6, 4
  q = jax.random.normal(keys[0], (b, t, n, h))
  k = jax.random.normal(keys[1], (b, s, kv_heads, h))
  v = jax.random.normal(keys[2], (b, s, kv_heads, h))
  bias = jax.random.normal(keys[3], (1, n, t, s)) if with_bias else None
  q_segments = jnp.array([[1, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1, 0]])
  k_segments = jnp.array([[1, 1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 0, 0, 0]])
  mask = q_segments[:, None, :, None] == k_segments[:, None, None, :]
  ours = lambda q, k, v: attend(q, k, v, mask, bias)
  ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, bias, mask)
  np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-6)
  square = lambda f: lambda *a: (f(*a) ** 2).sum()
  for g, r in zip(jax.grad(square(ours), (0, 1, 2))(q, k, v),
                  jax.grad(square(ref), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
