"""Autoregressive sampling by recomputing the whole prefix at each step.

Simple and exact for any decoder; the KV-cached decoder replaces it for speed.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx


@functools.partial(jax.jit, static_argnames=("graphdef", "new_tokens", "temperature"))
def sample(graphdef: nnx.GraphDef, params, prompts: jax.Array, key: jax.Array, *,
           new_tokens: int, temperature: float) -> jax.Array:
  """prompts [B, P] -> [B, P + new_tokens]; temperature 0 picks the argmax."""
  model = nnx.merge(graphdef, params)
  batch, prompt_len = prompts.shape
  total = prompt_len + new_tokens
  # [B, P] -> [B, P + new_tokens]
  tokens = jnp.pad(prompts, ((0, 0), (0, new_tokens)))
  positions = jnp.broadcast_to(jnp.arange(total), (batch, total))
  segment_ids = jnp.ones((batch, total), jnp.int32)

  def next_token(t, tokens):
    # Causal masking keeps the not-yet-written positions from affecting t - 1.
    # [B, V]
    logits = model(tokens, positions, segment_ids)[:, t - 1]
    if temperature == 0:
      chosen = jnp.argmax(logits, -1)
    else:
      chosen = jax.random.categorical(jax.random.fold_in(key, t), logits / temperature)
    return tokens.at[:, t].set(chosen.astype(tokens.dtype))

  return jax.lax.fori_loop(prompt_len, total, next_token, tokens)
