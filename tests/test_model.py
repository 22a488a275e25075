"""The decoder: packing isolates documents, causality, axis names, size and cost formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model import DecoderConfig, build_model, count_params, flops_per_token
from train.state import param_logical_specs

CFG = DecoderConfig(vocab_size=97, num_layers=2, embed_dim=32, num_heads=4, head_dim=8,
                    mlp_dim=64, max_length=24)
# fp32 logits of the same tokens through differently shaped (packed vs single) rows:
# only the summation order inside softmax/matmuls can differ, a few ulps of O(1) values.
RTOL, ATOL = 1e-5, 1e-5


def _logits(model, tokens, positions, segment_ids):
  return np.asarray(model(jnp.asarray(tokens)[None], jnp.asarray(positions)[None],
                          jnp.asarray(segment_ids)[None])[0])


def test_packed_row_equals_documents_run_separately():
  model = build_model(CFG, seed=0)
  rng = np.random.default_rng(0)
  docs = [rng.integers(5, CFG.vocab_size, n) for n in (7, 5, 9)]
  tokens = np.concatenate(docs + [np.zeros(3, int)])  # 3 padding positions
  positions = np.concatenate([np.arange(len(d)) for d in docs] + [np.zeros(3, int)])
  segment_ids = np.concatenate([np.full(len(d), i + 1) for i, d in enumerate(docs)]
                               + [np.zeros(3, int)])
  packed = _logits(model, tokens, positions, segment_ids)
  assert np.isfinite(packed).all()  # padding rows too: they must not poison the loss with NaN
  start = 0
  for doc in docs:
    alone = _logits(model, doc, np.arange(len(doc)), np.ones(len(doc), int))
    np.testing.assert_allclose(packed[start:start + len(doc)], alone, rtol=RTOL, atol=ATOL)
    start += len(doc)


def test_changing_a_future_token_never_changes_an_earlier_logit():
  model = build_model(CFG, seed=1)
  tokens = np.arange(10, 30)
  before = _logits(model, tokens, np.arange(20), np.ones(20, int))
  tokens[12] = 5
  after = _logits(model, tokens, np.arange(20), np.ones(20, int))
  np.testing.assert_array_equal(before[:12], after[:12])
  assert not np.allclose(before[12:], after[12:])


def test_every_parameter_names_one_logical_axis_per_dimension():
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(CFG, 0)), nnx.Param)
  shapes = nnx.to_pure_dict(abstract)
  specs = param_logical_specs(CFG)
  sizes = {"vocab": CFG.vocab_size, "embed": CFG.embed_dim, "heads": CFG.num_heads,
           "head_dim": CFG.head_dim, "mlp": CFG.mlp_dim, "length": CFG.max_length}
  flat_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(flat_shapes) == len(flat_specs) > 0
  for (path, shape), spec in zip(flat_shapes, flat_specs):
    assert len(spec) == len(shape.shape), path
    assert tuple(sizes[name] for name in spec) == shape.shape, (path, spec)


def test_parameter_count_matches_the_architecture_formula():
  d, f, n, h, v, l, t = 32, 64, 4, 8, 97, 2, 24
  per_layer = 4 * d * n * h + 2 * d * f + f + d + 2 * 2 * d  # attention, MLP + biases, 2 norms
  assert count_params(CFG) == v * d + t * d + l * per_layer + 2 * d


def test_flops_per_token_is_three_times_the_forward_matmuls():
  forward = 2 * (2 * (4 * 32 * 4 * 8 + 2 * 32 * 64) + 97 * 32) + 2 * 4 * 16 * 4 * 8
  assert flops_per_token(CFG, seq_len=16) == 3 * forward


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_compute_dtype_keeps_float32_params_and_logits(dtype):
  cfg = DecoderConfig(**{**CFG.__dict__, "dtype": dtype})
  model = build_model(cfg, seed=0)
  assert model.embed.table[...].dtype == jnp.float32
  out = model(jnp.ones((1, 4), jnp.int32), jnp.arange(4)[None], jnp.ones((1, 4), jnp.int32))
  assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
