"""Cached decoding equals recomputation; greedy, top-k, top-p and beam search agree where
they must; rows stop at EOS; the encoder fills masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model import ModelConfig, build_model, decoding

BASE = dict(vocab_size=61, num_layers=2, embed_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
            max_length=64)
CASES = {
    "decoder": dict(family="decoder"),
    "decoder_rotary_gqa_scan": dict(family="decoder", position="rotary", num_kv_heads=2,
                                    scan_layers=True),
    "encoder_decoder_t5": dict(family="encoder_decoder", position="relative", norm="rmsnorm",
                               relative_buckets=8, relative_max_distance=16, use_bias=False),
    "encoder_decoder_scan": dict(family="encoder_decoder", scan_layers=True),
    # Normalised keys in the self-attention cache and the cross-attention's projected keys.
    "encoder_decoder_qk_norm": dict(family="encoder_decoder", position="rotary", qk_norm=True),
}
# Cached and recomputed logits differ only in the order XLA sums the same products.
LOGIT_TOL = 1e-5


def _model(case, seed=0):
  return nnx.split(build_model(ModelConfig(**BASE, **CASES[case]), seed), nnx.Param)


def _prompts():
  """Three prompts of lengths 7, 3 and 5, right-padded into one batch."""
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.integers(5, 61, (3, 7)), jnp.int32), jnp.array([7, 3, 5])


@pytest.mark.parametrize("case", CASES)
def test_cached_decoding_equals_recomputing_the_sequence(case):
  graphdef, params = _model(case)
  inputs, lengths = _prompts()
  tokens, logits = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                     max_new_tokens=8, return_logits=True)
  ref_tokens, ref_logits = decoding.greedy_without_cache(graphdef, params, inputs, lengths,
                                                         max_new_tokens=8)
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_allclose(logits, ref_logits, rtol=LOGIT_TOL, atol=LOGIT_TOL)


@pytest.mark.parametrize("case", ["decoder", "decoder_rotary_gqa_scan"])
def test_a_prompt_read_both_ways_decodes_as_recomputed_and_unlike_a_causal_one(case):
  graphdef, params = _model(case)
  inputs, lengths = _prompts()
  tokens, logits = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                     max_new_tokens=8, return_logits=True, prompt_prefix=True)
  ref_tokens, ref_logits = decoding.greedy_without_cache(graphdef, params, inputs, lengths,
                                                         max_new_tokens=8, prompt_prefix=True)
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_allclose(logits, ref_logits, rtol=LOGIT_TOL, atol=LOGIT_TOL)
  _, causal = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                max_new_tokens=8, return_logits=True)
  # The last prompt token sees every prompt key either way; the earlier ones' states differ.
  assert (np.abs(np.asarray(logits - causal))[:, 0].max(-1) > 1e-3).all()


@pytest.mark.parametrize("case", ["decoder", "encoder_decoder_t5"])
def test_beam_of_one_and_top_k_of_one_are_greedy(case):
  graphdef, params = _model(case, seed=1)
  inputs, lengths = _prompts()
  greedy = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                             max_new_tokens=8)
  beam, _ = decoding.beam_search(graphdef, params, inputs, lengths, max_new_tokens=8,
                                 beam_size=1)
  top1 = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(3),
                           max_new_tokens=8, temperature=1.5, top_k=1)
  np.testing.assert_array_equal(beam, greedy)
  np.testing.assert_array_equal(top1, greedy)


def _sequence_log_prob(graphdef, params, inputs, lengths, new_tokens):
  """Sum of log-probabilities of `new_tokens` under the model, by teacher forcing."""
  model = nnx.merge(graphdef, params)
  total = []
  for b in range(inputs.shape[0]):
    row = jnp.concatenate([inputs[b, :lengths[b]], new_tokens[b]])[None]
    positions = jnp.arange(row.shape[1])[None]
    log_probs = jax.nn.log_softmax(model(row, positions, jnp.ones_like(row)), -1)[0]
    start = int(lengths[b])
    picked = log_probs[jnp.arange(start - 1, row.shape[1] - 1), row[0, start:]]
    total.append(float(picked.sum()))
  return np.array(total)


def test_beam_search_finds_at_least_as_likely_continuations_as_greedy():
  graphdef, params = _model("decoder", seed=2)
  inputs, lengths = _prompts()
  greedy = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                             max_new_tokens=6)
  beam, scores = decoding.beam_search(graphdef, params, inputs, lengths, max_new_tokens=6,
                                      beam_size=4, alpha=0.0)
  beam_lp = _sequence_log_prob(graphdef, params, inputs, lengths, beam)
  greedy_lp = _sequence_log_prob(graphdef, params, inputs, lengths, greedy)
  assert (beam_lp >= greedy_lp - 1e-4).all(), (beam_lp, greedy_lp)
  np.testing.assert_allclose(scores, beam_lp, rtol=1e-4)  # alpha 0: the raw log-probability


def test_top_p_keeps_the_smallest_prefix_reaching_p():
  probs = jnp.array([[0.05, 0.4, 0.3, 0.15, 0.1]])
  logits = jnp.log(probs)
  kept = lambda p: np.isfinite(np.asarray(decoding.filter_logits(logits, top_p=p)))[0]
  # Sorted: 0.4 (id 1), 0.3 (id 2), 0.15 (id 3), 0.1 (id 4), 0.05 (id 0).
  np.testing.assert_array_equal(kept(0.4), [0, 1, 0, 0, 0])
  np.testing.assert_array_equal(kept(0.41), [0, 1, 1, 0, 0])
  np.testing.assert_array_equal(kept(0.85), [0, 1, 1, 1, 0])
  np.testing.assert_array_equal(kept(0.86), [0, 1, 1, 1, 1])
  np.testing.assert_array_equal(kept(1.0), [1, 1, 1, 1, 1])
  np.testing.assert_array_equal(
      np.isfinite(np.asarray(decoding.filter_logits(logits, top_k=2)))[0], [0, 1, 1, 0, 0])


def test_sampling_is_reproducible_from_its_seed_and_rows_stop_at_eos():
  graphdef, params = _model("decoder", seed=3)
  inputs, lengths = _prompts()
  sample = lambda seed: np.asarray(decoding.generate(
      graphdef, params, inputs, lengths, jax.random.key(seed), max_new_tokens=12,
      temperature=1.0, top_p=0.9))
  np.testing.assert_array_equal(sample(5), sample(5))
  assert not np.array_equal(sample(5), sample(6))
  # Declare the token greedy decoding writes third in row 0 to be EOS: row 0 then stops
  # there (padding after it), and every token before any stop is unchanged.
  greedy = np.asarray(decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                        max_new_tokens=8))
  eos = int(greedy[0, 2])
  stopped = np.asarray(decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                         max_new_tokens=8, eos_id=eos))
  for row, ref in zip(stopped, greedy):
    end = int(np.argmax(ref == eos)) + 1 if (ref == eos).any() else len(ref)
    np.testing.assert_array_equal(row[:end], ref[:end])
    assert (row[end:] == decoding.PAD_ID).all()
  assert (stopped[0, 3:] == decoding.PAD_ID).all()


@pytest.mark.parametrize("case", ["decoder", "encoder_decoder_t5"])
def test_decode_without_a_cache_is_the_forward_pass(case):
  model = nnx.merge(*_model(case))
  inputs, _ = _prompts()
  positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  segments = jnp.ones_like(inputs)
  if model.GENERATION == "text_to_text":
    encoded = model.encode(inputs, positions, segments)
    logits, cache = model.decode(encoded, segments, inputs, positions, segments)
    expected = model(inputs, positions, segments, inputs, positions, segments)
  else:
    logits, cache = model.decode(inputs, positions, segments)
    expected = model(inputs, positions, segments)
  assert cache is None
  np.testing.assert_array_equal(logits, expected)


@pytest.mark.parametrize("family", ["encoder", "lstm"])
def test_models_that_do_not_continue_text_refuse_to_generate(family):
  graphdef, params = nnx.split(build_model(ModelConfig(**BASE, family=family), 0), nnx.Param)
  inputs, lengths = _prompts()
  calls = [lambda: decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                     max_new_tokens=2),
           lambda: decoding.beam_search(graphdef, params, inputs, lengths, max_new_tokens=2,
                                        beam_size=2),
           lambda: decoding.greedy_without_cache(graphdef, params, inputs, lengths,
                                                 max_new_tokens=2)]
  for call in calls:
    with pytest.raises(ValueError, match="does not generate continuations"):
      call()


def test_encoder_fills_masks_with_ranked_candidates():
  graphdef, params = nnx.split(build_model(ModelConfig(**BASE, family="encoder"), 0), nnx.Param)
  inputs, lengths = _prompts()
  ids, probs = decoding.fill_masks(graphdef, params, inputs.at[:, 1].set(4), lengths, top_k=3)
  assert ids.shape == probs.shape == (3, 7, 3)
  assert (np.diff(np.asarray(probs), axis=-1) <= 0).all()  # best first
  assert (np.asarray(probs).sum(-1) <= 1.0 + 1e-6).all()


def _repeats_brute_force(row, t, n) -> set:
  """Tokens that would complete at step t an n-gram already among row[:t]."""
  last = tuple(row[t - n + 1:t]) if n > 1 else ()
  return {row[j + n - 1] for j in range(0, t - n + 1) if tuple(row[j:j + n - 1]) == last}


def test_banned_ngrams_are_exactly_the_repeats():
  rng = np.random.default_rng(0)
  written = rng.integers(0, 4, (6, 12)).astype(np.int32)  # few tokens: many repeats
  logits = jnp.zeros((6, 4))
  for n in (1, 2, 3):
    for t in range(12):
      banned = np.isinf(np.asarray(decoding.ban_repeated_ngrams(logits, written, t, n)))
      for b in range(6):
        expected = _repeats_brute_force(list(written[b]), t, n) if t >= n else set()
        assert set(np.flatnonzero(banned[b])) == expected, (n, t, b)


@pytest.mark.parametrize("case", ["decoder", "encoder_decoder_t5"])
def test_no_repeat_ngram_decodes_greedily_until_a_bigram_would_repeat(case):
  graphdef, params = _model(case, seed=1)
  inputs, lengths = _prompts()
  greedy = np.asarray(decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                        max_new_tokens=24, eos_id=-1))
  banned = np.asarray(decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                        max_new_tokens=24, eos_id=-1, no_repeat_ngram=2))
  first_repeats = []
  for g, b in zip(greedy, banned):
    bigrams = list(zip(b[:-1], b[1:]))
    assert len(set(bigrams)) == len(bigrams), b
    first = next((t for t in range(2, len(g)) if (g[t - 1], g[t]) in
                  set(zip(g[:t - 1], g[1:t]))), len(g))
    first_repeats.append(first)
    np.testing.assert_array_equal(b[:first], g[:first])
    assert first == len(g) or b[first] != g[first]
  assert min(first_repeats) < 24  # the random models do repeat themselves greedily
