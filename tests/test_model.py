"""The three families and every config variant: they run, respect causality and packing,
name their axes right, and scan/unroll or remat/no-remat agree."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model import ModelConfig, build_model, count_params, train_flops_per_row
from model.stack import stack_layers

FAMILIES = ("encoder", "decoder", "encoder_decoder")
BASE = dict(vocab_size=61, num_layers=2, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
            max_length=32)
# Each variant is run in every family.
VARIANTS = {
    "default": {},
    "sinusoidal": dict(position="sinusoidal"),
    "rotary": dict(position="rotary"),
    "relative": dict(position="relative", relative_buckets=8, relative_max_distance=16),
    "rmsnorm": dict(norm="rmsnorm"),
    "post_norm": dict(norm_position="post"),
    "relu": dict(activation="relu"),
    "gelu_tanh": dict(activation="gelu_tanh"),
    "geglu": dict(activation="geglu"),
    "swiglu": dict(activation="swiglu"),
    "multi_query": dict(num_kv_heads=1),
    "grouped_query": dict(num_kv_heads=2),
    "untied_no_bias": dict(tie_embeddings=False, use_bias=False, scale_attention=False),
    "qk_norm": dict(qk_norm=True),
    "scan_remat": dict(scan_layers=True, remat="full"),
    "causal_blocks": dict(causal_block=6),  # rows of 20-24: blocks of 6, the last shorter
    "bfloat16": dict(dtype="bfloat16"),
}
# fp32 logits of the same tokens through differently shaped (packed vs single) rows:
# only the summation order inside softmax and matmuls differs, a few ulps of O(1)
# values. bfloat16 compute keeps 8 bits of mantissa, so its rows agree to ~1e-2.
TOL = {"float32": 2e-5, "bfloat16": 3e-2}


def make_cfg(family, **overrides):
  fields = dict(BASE, family=family, **overrides)
  if family == "encoder":
    fields.setdefault("num_token_types", 2)
  return ModelConfig(**fields)


def run(model, tokens, positions, segment_ids, rngs=None):
  """Logits [T, V] of one row; an encoder-decoder gets the same row on both sides."""
  row = lambda a: jnp.asarray(a)[None]
  args = dict(inputs=row(tokens), positions=row(positions), segment_ids=row(segment_ids))
  if "encoder_inputs" in model.INPUTS:
    args.update(encoder_inputs=args["inputs"], encoder_positions=args["positions"],
                encoder_segment_ids=args["segment_ids"])
  return np.asarray(model(**args, rngs=rngs)[0], np.float32)


def packed_row(rng, vocab, lengths, padding):
  docs = [rng.integers(5, vocab, n) for n in lengths]
  tokens = np.concatenate(docs + [np.zeros(padding, int)])
  positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(padding, int)])
  segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] +
                            [np.zeros(padding, int)])
  return docs, tokens, positions, segments


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_row_equals_documents_run_separately(family, variant):
  cfg = make_cfg(family, **VARIANTS[variant])
  model = build_model(cfg, seed=0)
  docs, tokens, positions, segments = packed_row(np.random.default_rng(0), cfg.vocab_size,
                                                 (7, 5, 9), padding=3)
  packed = run(model, tokens, positions, segments)
  assert packed.shape == (len(tokens), cfg.vocab_size)
  assert np.isfinite(packed).all()  # padding rows too: they must not poison the loss with NaN
  start, tol = 0, TOL[cfg.dtype]
  for doc in docs:
    alone = run(model, doc, np.arange(len(doc)), np.ones(len(doc), int))
    np.testing.assert_allclose(packed[start:start + len(doc)], alone, rtol=tol, atol=tol)
    start += len(doc)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_causal_where_it_must_be(family, variant):
  """Decoders never see the future; the encoder sees both ways."""
  cfg = make_cfg(family, **VARIANTS[variant])
  model = build_model(cfg, seed=1)
  tokens = np.arange(10, 30)
  before = run(model, tokens, np.arange(20), np.ones(20, int))
  changed = tokens.copy()
  changed[12] = 5
  after = run(model, changed, np.arange(20), np.ones(20, int))
  if family == "encoder":
    assert not np.allclose(before[:12], after[:12])
  elif family == "decoder":
    np.testing.assert_array_equal(before[:12], after[:12])
  else:  # the same row feeds both sides here, so changes reach earlier logits via the encoder
    model_changed_decoder_only = _decoder_only_change(model, tokens, changed)
    np.testing.assert_array_equal(*[x[:12] for x in model_changed_decoder_only])
  assert not np.allclose(before[12:], after[12:])


def test_qk_norm_makes_the_model_blind_to_the_scale_of_its_queries_and_keys():
  """Normalised queries and keys: every query and key kernel times 30 changes no logit;
  without the norm it does."""
  row = np.arange(10, 30)
  for qk_norm in (True, False):
    # eps 1e-12: the norms' epsilon is the one term that does not scale with the kernels.
    cfg = make_cfg("decoder", qk_norm=qk_norm, use_bias=False, norm_eps=1e-12)
    model = build_model(cfg, seed=3)
    before = run(model, row, np.arange(20), np.ones(20, int))
    for layer in model.stack.layers:
      for kernel in (layer.self_attn.query, layer.self_attn.key):
        kernel.value = kernel.value * 30.0
    after = run(model, row, np.arange(20), np.ones(20, int))
    if qk_norm:  # the same products in the same order, up to rounding of O(1) values
      np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    else:
      assert np.abs(after - before).max() > 1e-2


def _decoder_only_change(model, tokens, changed):
  """Encoder-decoder logits with the same encoder row and two decoder rows."""
  row = lambda a: jnp.asarray(a)[None]
  ones, pos = row(np.ones(len(tokens), int)), row(np.arange(len(tokens)))
  return [np.asarray(model(row(tokens), pos, ones, row(dec), pos, ones)[0]) for dec in
          (tokens, changed)]


def test_cross_attention_sees_the_encoder_only_within_its_segment():
  model = build_model(make_cfg("encoder_decoder"), seed=2)
  row = lambda a: jnp.asarray(a)[None]
  enc = np.arange(10, 22)
  enc_segments = np.array([1] * 6 + [2] * 6)
  enc_positions = np.concatenate([np.arange(6), np.arange(6)])
  dec, dec_segments = np.arange(30, 38), np.array([1] * 4 + [2] * 4)
  dec_positions = np.concatenate([np.arange(4), np.arange(4)])

  def logits(encoder_tokens):
    return np.asarray(model(row(encoder_tokens), row(enc_positions), row(enc_segments),
                            row(dec), row(dec_positions), row(dec_segments))[0])

  changed = enc.copy()
  changed[8] = 5  # a token of the second encoder document
  before, after = logits(enc), logits(changed)
  np.testing.assert_array_equal(before[:4], after[:4])
  assert not np.allclose(before[4:], after[4:])


@pytest.mark.parametrize("family", FAMILIES)
def test_scanned_layers_equal_unrolled_layers(family):
  cfg = make_cfg(family, position="relative", relative_buckets=8, relative_max_distance=16)
  unrolled = build_model(cfg, seed=3)
  params = nnx.to_pure_dict(nnx.state(unrolled, nnx.Param))
  stacks = [params] if family != "encoder_decoder" else [params["encoder"], params["decoder"]]
  for stack in ([params["stack"]] if family != "encoder_decoder" else stacks):
    stack["layers"] = stack_layers(stack["layers"])
  scanned_cfg = dataclasses.replace(cfg, scan_layers=True)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(scanned_cfg, 0)), nnx.Param)
  scanned = nnx.merge(graphdef, params)
  _, tokens, positions, segments = packed_row(np.random.default_rng(1), cfg.vocab_size, (9, 8), 3)
  np.testing.assert_allclose(run(scanned, tokens, positions, segments),
                             run(unrolled, tokens, positions, segments), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_changes_memory_not_gradients(policy):
  _, tokens, positions, segments = packed_row(np.random.default_rng(2), 61, (10, 6), 0)

  def grads(remat):
    cfg = make_cfg("decoder", remat=remat, scan_layers=True)
    graphdef, params = nnx.split(build_model(cfg, seed=4), nnx.Param)
    row = lambda a: jnp.asarray(a)[None]
    loss = lambda p: nnx.merge(graphdef, p)(row(tokens), row(positions), row(segments)).sum()
    return jax.grad(loss)(params)

  expected, got = grads("none"), grads(policy)
  # Recomputation lets XLA fuse and sum in another order: differences are a few
  # ulps of the largest gradient entries, so the tolerance scales with them.
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(expected))
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_only_with_rngs_and_keyed(family):
  model = build_model(make_cfg(family, dropout_rate=0.3), seed=5)
  tokens, positions, segments = np.arange(10, 26), np.arange(16), np.ones(16, int)
  eval_a, eval_b = (run(model, tokens, positions, segments) for _ in range(2))
  np.testing.assert_array_equal(eval_a, eval_b)
  key = lambda k: nnx.Rngs(dropout=jax.random.key(k))
  train_a, train_a2, train_b = (run(model, tokens, positions, segments, rngs=key(k))
                                for k in (0, 0, 1))
  np.testing.assert_array_equal(train_a, train_a2)
  assert not np.allclose(train_a, train_b) and not np.allclose(train_a, eval_a)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_names_one_logical_axis_per_dimension(family):
  cfg = make_cfg(family, tie_embeddings=False, activation="geglu", position="relative",
                 num_kv_heads=2, scan_layers=True, relative_buckets=8, relative_max_distance=16)
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(cfg, 0)), nnx.Param)
  shapes = nnx.to_pure_dict(abstract)
  specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract))
  # Sizes chosen distinct where names differ, so a swapped pair of names is caught.
  sizes = {"vocab": cfg.vocab_size, "embed": cfg.embed_dim, "heads": cfg.num_heads,
           "kv_heads": cfg.kv_heads, "head_dim": cfg.head_dim, "mlp": cfg.mlp_dim,
           "length": cfg.max_length, "layers": cfg.num_layers, "relpos_buckets": 8,
           "token_types": 2}
  flat_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(flat_shapes) == len(flat_specs) > 0
  for (path, shape), spec in zip(flat_shapes, flat_specs):
    # The encoder's MLM transform maps D -> D, named (embed, mlp).
    d_to_d = "mlm_dense" in str(path)
    expected = tuple(cfg.embed_dim if name == "mlp" and d_to_d else sizes[name] for name in spec)
    assert expected == shape.shape, (path, spec)


def test_parameter_count_matches_the_architecture_formula():
  cfg = make_cfg("decoder")
  d, f, n, h, v, l, t = 32, 64, 4, 8, 61, 2, 32
  attention = 4 * d * n * h + 3 * n * h + d  # q, k, v, out kernels and biases
  mlp = 2 * d * f + f + d
  per_layer = attention + mlp + 2 * 2 * d  # two LayerNorms
  assert count_params(cfg) == v * d + t * d + l * per_layer + 2 * d


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_causal_blocks_equal_whole_rows(family):
  """Causal self-attention in query blocks over the keys each block can see computes what
  whole rows do: logits and gradients agree to float32 rounding (tolerance as in the
  packing test: only the order of sums differs)."""
  _, tokens, positions, segments = packed_row(np.random.default_rng(5), 61, (11, 8), 5)
  row = lambda a: jnp.asarray(a)[None]
  inputs = [row(tokens), row(positions), row(segments)]
  inputs += inputs if family == "encoder_decoder" else []

  def logits_and_grads(causal_block):
    graphdef, params = nnx.split(build_model(make_cfg(family, causal_block=causal_block), 6),
                                 nnx.Param)
    logits = lambda p: nnx.merge(graphdef, p)(*inputs)
    return logits(params), jax.grad(lambda p: (logits(p) ** 2).mean())(params)

  (whole, whole_grads), (blocked, blocked_grads) = logits_and_grads(0), logits_and_grads(7)
  np.testing.assert_allclose(blocked, whole, rtol=2e-5, atol=2e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(whole_grads))
  for a, b in zip(jax.tree.leaves(whole_grads), jax.tree.leaves(blocked_grads)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN's kernel needs an NVIDIA GPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_cudnn_attention_is_as_close_to_float32_as_einsum_attention(family):
  """cuDNN's fused kernel (told when self-attention is causal) over two packed documents
  and padding, in bfloat16: its logits and gradients are no further from the float32
  einsum model's than the bfloat16 einsum model's are. Each error is the largest
  difference over the largest float32 value, per array. Both round to bfloat16's 8-bit
  mantissa in different places, so the bound allows twice the einsum's error, and 1%."""
  _, tokens, positions, segments = packed_row(np.random.default_rng(6), 61, (30, 20), 14)
  row = lambda a: jnp.asarray(a)[None]
  inputs = [row(tokens), row(positions), row(segments)]
  inputs += inputs if family == "encoder_decoder" else []

  def logits_and_grads(attention, dtype):
    cfg = make_cfg(family, attention=attention, dtype=dtype, num_heads=2, head_dim=64,
                   max_length=64)
    graphdef, params = nnx.split(build_model(cfg, 6), nnx.Param)
    logits = lambda p: nnx.merge(graphdef, p)(*inputs)
    return [logits(params)] + jax.tree.leaves(
        jax.grad(lambda p: (logits(p) ** 2).mean())(params))

  exact = logits_and_grads("einsum", "float32")
  error = lambda arrays: [float(np.abs(a - e).max() / np.abs(e).max())
                          for a, e in zip(arrays, exact)]
  einsum, cudnn = error(logits_and_grads("einsum", "bfloat16")), error(
      logits_and_grads("cudnn", "bfloat16"))
  for ours, bound in zip(cudnn, einsum):
    assert ours <= max(2 * bound, 1e-2), (cudnn, einsum)


@pytest.mark.parametrize("causal_block", [0, 16])
@pytest.mark.parametrize("family", FAMILIES)
def test_flop_count_matches_the_compiled_forward(family, causal_block):
  """Our matmul count against XLA's count of the compiled forward pass, with causal
  self-attention over whole rows (0) or in blocks of 16 queries.

  XLA also counts softmax, norms and activations, which our count leaves out:
  with ReLU they are under 1% of the total here (an erf GELU costs ~60 FLOPs
  per element on CPU and would hide a missing matmul in a looser bound).
  """
  cfg = make_cfg(family, embed_dim=256, num_heads=4, head_dim=64, mlp_dim=1024, vocab_size=512,
                 max_length=64, activation="relu", causal_block=causal_block)
  graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(cfg, 0)), nnx.Param)
  row = jax.ShapeDtypeStruct((1, 64), jnp.int32)
  inputs = {name: row for name in graphdef_inputs(family)}
  forward = jax.jit(lambda p, b: nnx.merge(graphdef, p)(**b))
  xla = forward.lower(params, inputs).compile().cost_analysis()["flops"]
  ours = train_flops_per_row(cfg, 64) / 3
  assert 0.99 < ours / xla <= 1.0, (ours, xla)


def graphdef_inputs(family):
  from model import FAMILIES as classes
  return classes[family].INPUTS


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_compute_dtype_keeps_float32_params_and_logits(dtype):
  model = build_model(make_cfg("decoder", dtype=dtype), seed=0)
  assert model.embed.table[...].dtype == jnp.float32
  out = model(jnp.ones((1, 4), jnp.int32), jnp.arange(4)[None], jnp.ones((1, 4), jnp.int32))
  assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()


def test_prefix_lm_reads_the_prefix_both_ways_and_the_rest_causally():
  model = build_model(make_cfg("decoder"), seed=6)
  row = lambda a: jnp.asarray(a)[None]
  prefix = (np.arange(20) <= 7).astype(np.int32)

  def logits(tokens):
    return np.asarray(model(row(tokens), row(np.arange(20)), row(np.ones(20, int)),
                            row(prefix))[0])

  tokens = np.arange(10, 30)
  base = logits(tokens)
  in_prefix, after = tokens.copy(), tokens.copy()
  in_prefix[5], after[12] = 5, 5
  assert not np.allclose(logits(in_prefix)[:5], base[:5])  # earlier prefix positions see it
  np.testing.assert_array_equal(logits(after)[:12], base[:12])  # the suffix stays causal


def test_t5_init_draws_t5s_deviations_and_normal_stays_at_0_02():
  # Mesh TF's T5 (and HF's T5): embeddings N(0, 1), kernels N(0, 1/sqrt(fan-in)), the query's
  # 1/sqrt(head_dim) folded in. Each array has >= 16k draws: its sample deviation is within
  # 2% of the true one (the standard error is 1/sqrt(2n) < 0.6%).
  from configs import gpt_tiny, t5_tiny
  from model import model_config
  t5 = model_config(t5_tiny.get_config())
  assert t5.init == "t5" and not t5.scale_attention
  d, h, f = t5.embed_dim, t5.head_dim, t5.mlp_dim
  model = build_model(t5, 0)
  layer = model.decoder.layers[0]
  expected = {"embedding": (model.embed.table, 1.0),
              "query": (layer.cross_attn.query, (d * h) ** -0.5),
              "key": (layer.cross_attn.key, d ** -0.5),
              "out": (layer.self_attn.out, (t5.num_heads * h) ** -0.5),
              "wi": (layer.mlp.wi.kernel, d ** -0.5), "wo": (layer.mlp.wo.kernel, f ** -0.5)}
  gpt = build_model(model_config(gpt_tiny.get_config()), 0)
  expected.update(gpt_embedding=(gpt.embed.table, 0.02),
                  gpt_wo=(gpt.stack.layers[0].mlp.wo.kernel, 0.02))
  for name, (variable, want) in expected.items():
    assert float(np.std(np.asarray(variable[...]))) == pytest.approx(want, rel=0.02), name
