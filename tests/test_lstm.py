"""The LSTM family: it runs, is causal, keeps packed documents apart, names its axes, counts its
parameters and FLOPs right, and trains through the same loop as the transformers."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model import ModelConfig, build_model, count_params, train_flops_per_row
from model.stack import stack_layers
from tests.conftest import tiny_config
from train import trainer

# Distinct sizes for distinct axis names, so a swapped pair of names is caught.
CFG = ModelConfig(family="lstm", vocab_size=61, num_layers=2, embed_dim=32, num_heads=4,
                  head_dim=8, mlp_dim=48, max_length=32)


def run(model, tokens, segment_ids, rngs=None):
  """Logits [T, V] of one row."""
  row = lambda a: jnp.asarray(a)[None]
  return np.asarray(model(row(tokens), row(np.arange(len(tokens))), row(segment_ids),
                          rngs=rngs)[0])


def test_runs_and_gives_finite_logits_everywhere():
  model = build_model(CFG, seed=0)
  tokens, segments = np.arange(10, 30), np.array([1] * 12 + [2] * 5 + [0] * 3)
  logits = run(model, tokens, segments)
  assert logits.shape == (20, CFG.vocab_size) and logits.dtype == np.float32
  assert np.isfinite(logits).all()  # padding too: it must not poison the loss with NaN


@pytest.mark.parametrize("overrides", [{}, dict(tie_embeddings=False, use_bias=False),
                                       dict(scan_layers=True, remat="full")])
def test_causal(overrides):
  model = build_model(dataclasses.replace(CFG, **overrides), seed=1)
  tokens = np.arange(10, 30)
  before = run(model, tokens, np.ones(20, int))
  changed = tokens.copy()
  changed[12] = 5
  after = run(model, changed, np.ones(20, int))
  np.testing.assert_array_equal(before[:12], after[:12])
  assert not np.allclose(before[12:], after[12:])


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-5), ("bfloat16", 3e-2)])
def test_packed_row_equals_documents_run_separately(dtype, tol):
  model = build_model(dataclasses.replace(CFG, dtype=dtype), seed=2)
  rng = np.random.default_rng(0)
  docs = [rng.integers(5, CFG.vocab_size, n) for n in (7, 5, 9)]
  tokens = np.concatenate(docs + [np.zeros(3, int)])
  segments = np.concatenate([np.full(len(d), i + 1) for i, d in enumerate(docs)] + [[0] * 3])
  packed = run(model, tokens, segments)
  start = 0
  for doc in docs:
    alone = run(model, doc, np.ones(len(doc), int))
    np.testing.assert_allclose(packed[start:start + len(doc)], alone, rtol=tol, atol=tol)
    start += len(doc)


@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_names_one_logical_axis_per_dimension(scan):
  cfg = dataclasses.replace(CFG, tie_embeddings=False, scan_layers=scan, num_layers=3)
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(cfg, 0)), nnx.Param)
  shapes = nnx.to_pure_dict(abstract)
  specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract))
  sizes = {"vocab": cfg.vocab_size, "embed": cfg.embed_dim, "mlp": cfg.mlp_dim,
           "layers": cfg.num_layers}
  flat_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(flat_shapes) == len(flat_specs) > 0
  for (path, shape), spec in zip(flat_shapes, flat_specs):
    assert tuple(sizes[name] for name in spec) == shape.shape, (path, spec)


def test_scanned_layers_equal_unrolled_layers():
  unrolled = build_model(CFG, seed=3)
  params = nnx.to_pure_dict(nnx.state(unrolled, nnx.Param))
  params["layers"] = stack_layers(params["layers"])
  graphdef, _ = nnx.split(nnx.eval_shape(
      lambda: build_model(dataclasses.replace(CFG, scan_layers=True), 0)), nnx.Param)
  tokens, segments = np.arange(10, 27), np.array([1] * 9 + [2] * 8)
  np.testing.assert_allclose(run(nnx.merge(graphdef, params), tokens, segments),
                             run(unrolled, tokens, segments), rtol=2e-5, atol=2e-5)


def test_dropout_only_with_rngs_and_keyed():
  model = build_model(dataclasses.replace(CFG, dropout_rate=0.3), seed=5)
  tokens, segments = np.arange(10, 26), np.ones(16, int)
  np.testing.assert_array_equal(run(model, tokens, segments), run(model, tokens, segments))
  key = lambda k: nnx.Rngs(dropout=jax.random.key(k))
  a, a2, b = (run(model, tokens, segments, rngs=key(k)) for k in (0, 0, 1))
  np.testing.assert_array_equal(a, a2)
  assert not np.allclose(a, b) and not np.allclose(a, run(model, tokens, segments))


def test_parameter_count_matches_the_architecture_formula():
  v, d, f, layers = 61, 32, 48, 2
  # A LayerNorm (scale, bias); four gates, each a kernel from the input, one from the
  # previous output and a bias; the F -> D projection. Then the final LayerNorm; the
  # embedding doubles as the output matrix.
  per_layer = 2 * d + 4 * (d * f + d * f + f) + f * d
  assert count_params(CFG) == v * d + layers * per_layer + 2 * d
  assert count_params(dataclasses.replace(CFG, tie_embeddings=False)) == (
      2 * v * d + layers * per_layer + 2 * d)


def test_flop_count_matches_the_compiled_forward():
  """XLA counts a scan's body once, not once per step; one step is exact, and our count is
  linear in the length (every step does the same matmuls)."""
  cfg = dataclasses.replace(CFG, embed_dim=256, mlp_dim=1024, vocab_size=512)
  graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(cfg, 0)), nnx.Param)
  row = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  forward = jax.jit(lambda p, b: nnx.merge(graphdef, p)(**b))
  xla = forward.lower(params, dict(inputs=row, positions=row, segment_ids=row)).compile()
  ours = train_flops_per_row(cfg, 1) / 3
  assert 0.99 < ours / xla.cost_analysis()["flops"] <= 1.0, (ours, xla.cost_analysis())
  assert train_flops_per_row(cfg, 64) == 64 * train_flops_per_row(cfg, 1)


def test_trains_through_the_trainer_with_falling_loss(text_dir, data_dir, tmp_path):
  config = tiny_config(text_dir, data_dir, "lstm_tiny")
  config.train.num_steps, config.train.eval_every, config.train.log_every = 12, 6, 4
  summary = trainer.train(config, str(tmp_path))
  with open(os.path.join(tmp_path, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  train_loss = [r["loss"] for r in records if r["split"] == "train"]
  val_loss = [r["loss"] for r in records if r["split"] == "validation"]  # same batches
  assert len(train_loss) == 3 and train_loss[-1] < train_loss[0], train_loss
  assert len(val_loss) == 2 and val_loss[1] < val_loss[0], val_loss
  assert summary["step"] == 12 and summary["final_bits_per_byte"] < summary["initial_bits_per_byte"]
