"""tools/inspect.py: the attention weights it draws are the ones the model applies, for every
layer, head and family, scanned or not; the embedding projection is the table's PCA."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model import ModelConfig, build_model
from model.attention import attend, attention_weights, segment_mask
from model.stack import stack_layers
from tools import hf_params, inspect

CFG = dict(vocab_size=40, num_layers=2, embed_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
           max_length=32)
# fp32 einsums and softmaxes of O(1) values, summed in a different order: a few ulps.
RTOL = 1e-5


class CharTokenizer:
  """One token per character: enough to frame a row as each family does."""
  pad_id, eos_id, bos_id = 0, 1, 2

  def encode(self, text):
    return np.array([3 + ord(c) % 37 for c in text], np.int32)

  def decode(self, ids):
    return "".join(chr(i) for i in ids)

  def id_to_piece(self, i):
    return f"<{i}>"


def test_attention_weights_times_values_is_attend():
  kq, kk, kv, kb, km = jax.random.split(jax.random.key(0), 5)
  # q [B, T, N, H] with N = 4 query heads over K = 2 key/value heads (grouped-query).
  q = jax.random.normal(kq, (2, 5, 4, 8))
  k, v = jax.random.normal(kk, (2, 7, 2, 8)), jax.random.normal(kv, (2, 7, 2, 8))
  bias = jax.random.normal(kb, (1, 4, 5, 7))
  mask = jax.random.bernoulli(km, 0.6, (2, 1, 5, 7)).at[..., 0].set(True)
  weights = attention_weights(q, k, mask, bias)
  assert weights.shape == (2, 4, 5, 7)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=RTOL)
  assert (weights[jnp.broadcast_to(~mask, weights.shape)] == 0).all()
  # Query head n reads key/value head n // 2.
  mixed = jnp.einsum("BNTS,BSNH->BTNH", weights, jnp.repeat(v, 2, axis=2))
  np.testing.assert_allclose(mixed, attend(q, k, v, mask, bias), rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("family", ["decoder", "encoder", "encoder_decoder"])
def test_read_gives_each_layers_weights_and_unrolls_a_scanned_model(family):
  cfg = ModelConfig(family=family, position="relative" if family == "encoder_decoder" else "rotary",
                    **CFG)
  model = build_model(cfg, seed=1)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  scanned_cfg = dataclasses.replace(cfg, scan_layers=True)
  _, from_scanned = inspect.unrolled(scanned_cfg, hf_params.map_layers(params, stack_layers))
  text = "def f(x): return x"
  reading = inspect.read(cfg, model, CharTokenizer(), text, target="xy" * 3)
  again = inspect.read(cfg, from_scanned, CharTokenizer(), text, target="xy" * 3)
  kinds = {"decoder": [("decoder", "self")], "encoder": [("encoder", "self")],
           "encoder_decoder": [("decoder", "cross"), ("decoder", "self"), ("encoder", "self")]}
  assert sorted(reading.weights) == kinds[family]
  # Queries of each: BOS and the text; the text; the text and EOS; the start token and target.
  queries = {"decoder": len(text) + 1, "encoder": len(text),
             "encoder_decoder": len(text) + 1}
  for key, weights in reading.weights.items():
    np.testing.assert_array_equal(weights, again.weights[key])
    t, s = len(reading.query_tokens[key]), len(reading.key_tokens[key])
    assert weights.shape == (2, 4, t, s)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=RTOL)
    causal = key == ("decoder", "self")
    assert t == (7 if family == "encoder_decoder" and key[0] == "decoder" else queries[family])
    # A causal stack gives no weight to later tokens; a bidirectional one does.
    assert (np.triu(weights, 1) == 0).all() == causal
  # The model is left as it was: no sown weights, nothing recording.
  assert not nnx.state(model, nnx.Intermediate)
  assert not any(m.record_weights for m in inspect._attentions(model).values())


def test_embedding_projection_is_the_pca_of_the_table():
  rng = np.random.default_rng(0)
  # A table whose spread lies along two known directions, with little noise elsewhere.
  directions = np.linalg.qr(rng.normal(size=(16, 2)))[0].T
  table = (rng.normal(size=(300, 1)) * 5 * directions[0] + rng.normal(size=(300, 1)) * 2
           * directions[1] + rng.normal(size=(300, 16)) * 0.01)
  points = inspect.embedding_projection(table)
  assert points.shape == (300, 2)
  np.testing.assert_allclose(points.mean(0), 0, atol=1e-9)
  # The first component carries the larger spread and recovers it up to sign.
  assert points[:, 0].std() > 2 * points[:, 1].std()
  centred = table - table.mean(0)
  assert abs(np.corrcoef(points[:, 0], centred @ directions[0])[0, 1]) > 0.999


def test_labels_show_whitespace():
  assert inspect.shown("  x\n") == "\u00b7\u00b7x\\n"


def test_head_summary_says_where_a_head_looks():
  t = 6
  own = np.eye(t)
  previous = np.eye(t, k=-1)
  previous[0, 0] = 1.0  # the first token can only read itself
  first = np.zeros((t, t))
  first[:, 0] = 1.0
  rows = inspect.head_summary(np.stack([own, previous, first])[None])
  assert [(r["layer"], r["head"]) for r in rows] == [(0, 0), (0, 1), (0, 2)]
  assert [r["self"] for r in rows] == [1.0, 1 / t, 1 / t]
  assert [r["previous"] for r in rows] == [0.0, 1.0, 1 / (t - 1)]
  assert [r["first"] for r in rows] == [1 / t, 2 / t, 1.0]
  assert rows[0]["distance"] == 0.0
  assert rows[1]["distance"] == pytest.approx((t - 1) / t)
  assert rows[2]["distance"] == pytest.approx(sum(range(t)) / t)
  assert inspect.summary_table(rows).splitlines()[3] == "| 0 | 1 | 1.00 | 0.17 | 0.33 | 0.8 |"
