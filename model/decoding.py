"""Generation with a key/value cache: greedy, temperature, top-k, top-p and beam search,
for the decoder and the encoder-decoder, optionally never repeating an n-gram of what it
writes; mask filling for the encoder.

Prompts are batched right-padded with their lengths: row b's prompt fills
positions [0, length_b) and its new tokens follow at length_b, length_b + 1, ...
Each new token costs one cached step of one position, not a pass over the prefix.
A row stops at EOS: later tokens are padding. All functions are jitted.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

# Defaults of `pad_id` / `eos_id`: the layout of a tokenizer trained here (train/tokenizer.py's
# Specials.trained); callers with a tokenizer pass its own ids.
EOS_ID, PAD_ID = 1, 0


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """logits [B, V] with all but the top_k (0: all) and all beyond the nucleus set to -inf.

  The nucleus is the smallest prefix of tokens sorted by probability whose mass
  reaches top_p (Holtzman et al. 2020).
  """
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_probs = jnp.take_along_axis(jax.nn.softmax(logits, -1), order, -1)
    # Keep a token if the mass before it has not reached top_p yet.
    mass_before = jnp.cumsum(sorted_probs, -1) - sorted_probs
    keep_sorted = mass_before < top_p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(
        keep_sorted)
    logits = jnp.where(keep, logits, -jnp.inf)
  return logits


def ban_repeated_ngrams(logits: jax.Array, written: jax.Array, t, n: int) -> jax.Array:
  """logits [B, V] with -inf on every token that would complete, at step t, an n-gram
  already in written[:, :t] (written [B, N]: the tokens chosen so far; later ones ignored).

  The n-gram starting at j repeats when its first n - 1 tokens equal the last n - 1
  written, written[:, t-n+1:t]; it may only be one that ended before step t (j <= t - n).
  """
  batch, room = written.shape
  starts = room - n + 1
  if starts <= 0:  # no room for an n-gram, let alone two
    return logits
  # [B, starts, n]: every n-gram of the row.
  ngrams = jnp.stack([written[:, i:i + starts] for i in range(n)], -1)
  last = jax.lax.dynamic_slice_in_dim(written, jnp.maximum(t - n + 1, 0), n - 1, axis=1)
  repeats = (jnp.all(ngrams[..., :-1] == last[:, None, :], -1)
             & (jnp.arange(starts) <= t - n)[None, :])  # [B, starts]
  banned = jnp.zeros(logits.shape, jnp.int32).at[
      jnp.arange(batch)[:, None], ngrams[..., -1]].max(repeats.astype(jnp.int32))
  return jnp.where(banned > 0, -jnp.inf, logits)


def choose(logits: jax.Array, key, temperature: float, top_k: int, top_p: float) -> jax.Array:
  """Next tokens [B] from logits [B, V]: argmax at temperature 0, else a filtered sample."""
  if temperature == 0.0:
    return jnp.argmax(logits, -1)
  return jax.random.categorical(key, filter_logits(logits / temperature, top_k, top_p))


# ---------------------------------------------------------------- per kind: prefill and step
def _continuation_start(model, prompts, lengths, max_new_tokens, pad_id, prompt_prefix):
  """(logits [B, V] for the first new token, cache, positions [B] of the first new token,
  None: no encoder segments). With `prompt_prefix` the prompt reads itself both ways, as a
  prefix LM's prefix (its cached keys and values are then those of that reading)."""
  del pad_id  # the prompt's own tokens start the continuation
  batch, prompt_len = prompts.shape
  positions = jnp.broadcast_to(jnp.arange(prompt_len), prompts.shape)
  segments = (positions < lengths[:, None]).astype(jnp.int32)
  cache = model.init_cache(batch, prompt_len + max_new_tokens)
  logits, cache = model.decode(prompts, positions, segments, cache=cache,
                               prefix=segments if prompt_prefix else None)
  return logits[jnp.arange(batch), lengths - 1], cache, lengths, None


def _continuation_step(model, encoder_segment_ids, tokens, positions, cache):
  del encoder_segment_ids
  logits, cache = model.decode(tokens[:, None], positions[:, None],
                               jnp.ones_like(tokens)[:, None], cache=cache)
  return logits[:, 0], cache


def _text_to_text_start(model, encoder_inputs, encoder_lengths, max_new_tokens, pad_id,
                        prompt_prefix):
  """Encodes once (the encoder reads both ways: `prompt_prefix` changes nothing); the
  decoder starts from PAD at position 0, as in training."""
  del prompt_prefix
  batch, source_len = encoder_inputs.shape
  positions = jnp.broadcast_to(jnp.arange(source_len), encoder_inputs.shape)
  segments = (positions < encoder_lengths[:, None]).astype(jnp.int32)
  encoded = model.encode(encoder_inputs, positions, segments)
  cache = model.init_cache(encoded, max_new_tokens + 1)
  start = jnp.full((batch,), pad_id, jnp.int32)
  zeros = jnp.zeros((batch,), jnp.int32)
  logits, cache = _text_to_text_step(model, segments, start, zeros, cache)
  return logits, cache, zeros + 1, segments


def _text_to_text_step(model, encoder_segment_ids, tokens, positions, cache):
  logits, cache = model.decode(None, encoder_segment_ids, tokens[:, None], positions[:, None],
                               jnp.ones_like(tokens)[:, None], cache=cache)
  return logits[:, 0], cache


# model.GENERATION -> (start, step) of cached decoding.
_DECODING = {"continuation": (_continuation_start, _continuation_step),
             "text_to_text": (_text_to_text_start, _text_to_text_step)}


def _generation(model) -> str:
  """model.GENERATION, if it is one of those the functions below decode."""
  if model.GENERATION not in _DECODING:
    raise ValueError(f"this model (GENERATION={model.GENERATION!r}) does not generate "
                     f"continuations; generate, beam_search and greedy_without_cache need "
                     f"GENERATION 'continuation' or 'text_to_text' (mask filling: fill_masks)")
  return model.GENERATION


def _start(model, inputs, lengths, max_new_tokens, pad_id, prompt_prefix=False):
  """(first logits [B, V], cache, first new positions [B], encoder segments or None)."""
  start, _ = _DECODING[_generation(model)]
  return start(model, inputs, lengths, max_new_tokens, pad_id, prompt_prefix)


def _step(graphdef, params, encoder_segment_ids, tokens, positions, cache):
  """(logits [B, V] after `tokens` [B] at `positions` [B], cache).

  The model is merged here from `params` carried through the loop that calls this:
  an NNX module (or its variables) must not be closed over across JAX trace levels,
  which scanned layers would then reject.
  """
  model = nnx.merge(graphdef, params)
  _, step = _DECODING[model.GENERATION]
  return step(model, encoder_segment_ids, tokens, positions, cache)


# ---------------------------------------------------------------- sampling and greedy
@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature",
                                             "top_k", "top_p", "return_logits", "eos_id",
                                             "pad_id", "prompt_prefix", "no_repeat_ngram"))
def generate(graphdef: nnx.GraphDef, params, inputs: jax.Array, lengths: jax.Array, key, *,
             max_new_tokens: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             return_logits: bool = False, eos_id: int = EOS_ID, pad_id: int = PAD_ID,
             prompt_prefix: bool = False, no_repeat_ngram: int = 0):
  """New tokens [B, max_new_tokens] (and their logits [B, max_new_tokens, V] if asked).

  inputs [B, P]: the decoder's prompts, or the encoder-decoder's source rows;
  lengths [B]: how many of each row's P tokens are real; prompt_prefix: a decoder reads
  its prompts both ways (a model tuned with a bidirectional prefix); no_repeat_ngram n > 0:
  no n-gram occurs twice among the new tokens (the prompt may repeat in them). Returned
  logits are the model's, before any ban.
  """
  model = nnx.merge(graphdef, params)
  logits, cache, positions, encoder_segments = _start(model, inputs, lengths, max_new_tokens,
                                                      pad_id, prompt_prefix)
  batch = inputs.shape[0]

  def one_token(carry, t):
    params, logits, cache, done, written = carry
    allowed = (ban_repeated_ngrams(logits, written, t, no_repeat_ngram) if no_repeat_ngram
               else logits)
    token = choose(allowed, jax.random.fold_in(key, t), temperature, top_k, top_p)
    token = jnp.where(done, pad_id, token).astype(jnp.int32)
    done = done | (token == eos_id)
    written = written.at[:, t].set(token)
    next_logits, cache = _step(graphdef, params, encoder_segments, token, positions + t, cache)
    return (params, next_logits, cache, done, written), (logits if return_logits else None)

  (*_, tokens), all_logits = jax.lax.scan(
      one_token, (params, logits, cache, jnp.zeros(batch, bool),
                  jnp.full((batch, max_new_tokens), pad_id, jnp.int32)),
      jnp.arange(max_new_tokens))
  return (tokens, jnp.swapaxes(all_logits, 0, 1)) if return_logits else tokens


# ---------------------------------------------------------------- beam search
def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT's ((5 + length) / 6) ** alpha (Wu et al. 2016); alpha 0 ranks by raw log-prob."""
  return ((5.0 + length) / 6.0) ** alpha


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "beam_size",
                                             "alpha", "eos_id", "pad_id"))
def beam_search(graphdef: nnx.GraphDef, params, inputs: jax.Array, lengths: jax.Array, *,
                max_new_tokens: int, beam_size: int, alpha: float = 0.6, eos_id: int = EOS_ID,
                pad_id: int = PAD_ID):
  """(best tokens [B, max_new_tokens], their length-penalised scores [B]).

  Keeps the beam_size highest cumulative log-probabilities; a beam that emits
  EOS stops growing (its later tokens are padding at no cost) and is ranked at
  the end by score / length_penalty(its length).
  """
  model = nnx.merge(graphdef, params)
  batch, width = inputs.shape[0], beam_size
  # Every beam starts as a copy of its row: [B, ...] -> [B * W, ...]
  repeat = lambda x: jnp.repeat(x, width, axis=0)
  logits, cache, positions, encoder_segments = _start(model, repeat(inputs), repeat(lengths),
                                                      max_new_tokens, pad_id)
  # Only the first copy is live at the start, so the W beams begin distinct.
  scores = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (width - 1)), batch)

  def one_token(carry, t):
    params, logits, cache, scores, done, lengths_so_far, tokens = carry
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    # A finished beam may only add padding, at no cost.
    finished = jnp.full((vocab,), -jnp.inf).at[pad_id].set(0.0)
    log_probs = jnp.where(done[:, None], finished, log_probs)
    # [B * W, V] -> [B, W * V]: the best W continuations of each row.
    candidates = (scores[:, None] + log_probs).reshape(batch, width * vocab)
    scores, flat = jax.lax.top_k(candidates, width)
    parent = (flat // vocab + jnp.arange(batch)[:, None] * width).reshape(-1)
    token = (flat % vocab).reshape(-1).astype(jnp.int32)
    scores = scores.reshape(-1)
    cache = jax.tree.map(lambda x: jnp.take(x, parent, axis=1 if x.ndim == 5 else 0), cache)
    was_done = done[parent]
    lengths_so_far = lengths_so_far[parent] + (~was_done)
    done = was_done | (token == eos_id)
    tokens = tokens[parent].at[:, t].set(token)
    next_logits, cache = _step(graphdef, params, None if encoder_segments is None else
                               encoder_segments[parent], token, positions + t, cache)
    return (params, next_logits, cache, scores, done, lengths_so_far, tokens), None

  init = (params, logits, cache, scores, jnp.zeros(batch * width, bool),
          jnp.zeros(batch * width, jnp.int32),
          jnp.zeros((batch * width, max_new_tokens), jnp.int32))
  (_, _, _, scores, _, lengths_so_far, tokens), _ = jax.lax.scan(one_token, init,
                                                                jnp.arange(max_new_tokens))
  final = (scores / length_penalty(lengths_so_far, alpha)).reshape(batch, width)
  best = jnp.argmax(final, -1)
  pick = lambda x: x.reshape(batch, width, *x.shape[1:])[jnp.arange(batch), best]
  return pick(tokens), final[jnp.arange(batch), best]


# ---------------------------------------------------------------- reference and the encoder
@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "eos_id", "pad_id",
                                             "prompt_prefix"))
def greedy_without_cache(graphdef: nnx.GraphDef, params, inputs: jax.Array, lengths: jax.Array,
                         *, max_new_tokens: int, eos_id: int = EOS_ID, pad_id: int = PAD_ID,
                         prompt_prefix: bool = False):
  """Greedy decoding that reruns the whole sequence for every token: the exact reference
  for the cache (prompt_prefix as in `generate`). Returns (tokens [B, N], logits [B, N, V])."""
  text_to_text = _generation(nnx.merge(graphdef, params)) == "text_to_text"
  batch = inputs.shape[0]
  if text_to_text:
    source_positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    source_segments = (source_positions < lengths[:, None]).astype(jnp.int32)
    rows = jnp.full((batch, max_new_tokens + 1), pad_id, jnp.int32)
    starts = jnp.zeros(batch, jnp.int32)
  else:
    rows = jnp.pad(inputs, ((0, 0), (0, max_new_tokens)))
    starts = lengths - 1
  positions = jnp.broadcast_to(jnp.arange(rows.shape[1]), rows.shape)

  def one_token(carry, t):
    params, rows, done = carry
    model = nnx.merge(graphdef, params)
    segments = (positions <= (starts + t)[:, None]).astype(jnp.int32)
    if text_to_text:
      all_logits = model(inputs, source_positions, source_segments, rows, positions, segments)
    else:
      prefix = (positions < lengths[:, None]).astype(jnp.int32) if prompt_prefix else None
      all_logits = model(rows, positions, segments, prefix)
    logits = all_logits[jnp.arange(batch), starts + t]
    token = jnp.where(done, pad_id, jnp.argmax(logits, -1)).astype(jnp.int32)
    rows = rows.at[jnp.arange(batch), starts + t + 1].set(token)
    return (params, rows, done | (token == eos_id)), (token, logits)

  _, (tokens, logits) = jax.lax.scan(one_token, (params, rows, jnp.zeros(batch, bool)),
                                     jnp.arange(max_new_tokens))
  return tokens.T, jnp.swapaxes(logits, 0, 1)


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k"))
def fill_masks(graphdef: nnx.GraphDef, params, inputs: jax.Array, lengths: jax.Array, *,
               top_k: int = 5):
  """The encoder's top_k candidates at every position: (ids [B, T, k], probabilities)."""
  model = nnx.merge(graphdef, params)
  positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  segments = (positions < lengths[:, None]).astype(jnp.int32)
  probs = jax.nn.softmax(model(inputs, positions, segments), -1)
  top_probs, top_ids = jax.lax.top_k(probs, top_k)
  return top_ids, top_probs
