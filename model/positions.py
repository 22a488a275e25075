"""Position information: learned or sinusoidal tables added to the embeddings, rotary
embeddings applied to queries and keys, and T5's bucketed relative-position bias.

All take per-token `positions` [B, T] (restarting at 0 in each packed document),
never `arange(T)`, so packed and unpacked rows see the same positions.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from model.layers import param

POSITIONS = ("learned", "sinusoidal", "rotary", "relative")


class LearnedPositions(nnx.Module):
  """A trained table [max_length, D] indexed by position (BERT, GPT-2)."""

  def __init__(self, max_length: int, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.table = param(rngs, nnx.initializers.normal(0.01), (max_length, dim),
                       ("length", "embed"), param_dtype)

  def __call__(self, positions: jax.Array) -> jax.Array:
    # [B, T] -> [B, T, D]
    return jnp.take(self.table[...].astype(self.dtype), positions, axis=0)


def sinusoidal(positions: jax.Array, dim: int, dtype) -> jax.Array:
  """Fixed sines and cosines at geometric wavelengths (Vaswani et al. 2017), halves concatenated."""
  # [B, T] -> [B, T, D/2]
  inv_freq = jnp.exp(-math.log(10_000.0) * jnp.arange(dim // 2) / (dim // 2))
  angles = positions[..., None].astype(jnp.float32) * inv_freq
  # [B, T, D/2] -> [B, T, D]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1).astype(dtype)


def apply_rotary(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotates pairs (i, i + H/2) of each head by position-dependent angles (RoFormer, LLaMA).

  x: [B, T, N, H] with H even; positions: [B, T].
  """
  half = x.shape[-1] // 2
  # [B, T] -> [B, T, 1, H/2]
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = (positions[..., None].astype(jnp.float32) * inv_freq)[:, :, None, :]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  # [B, T, N, H]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def relative_bucket(relative: jax.Array, *, bidirectional: bool, num_buckets: int,
                    max_distance: int) -> jax.Array:
  """T5's bucket of each key-minus-query offset: exact up to buckets/2, then log-spaced."""
  bucket = jnp.zeros_like(relative)
  if bidirectional:
    num_buckets //= 2
    bucket += (relative > 0) * num_buckets
    distance = jnp.abs(relative)
  else:
    # A causal stack never sees positive offsets; they share bucket 0.
    distance = -jnp.minimum(relative, 0)
  exact = num_buckets // 2
  log_ratio = jnp.log(jnp.maximum(distance, 1) / exact) / math.log(max_distance / exact)
  far = exact + (log_ratio * (num_buckets - exact)).astype(relative.dtype)
  far = jnp.minimum(far, num_buckets - 1)
  return bucket + jnp.where(distance < exact, distance, far)


class RelativePositionBias(nnx.Module):
  """A learned bias per (bucket, head) added to attention logits; one per stack, as in T5."""

  def __init__(self, num_buckets: int, max_distance: int, num_heads: int, *, bidirectional: bool,
               param_dtype, rngs: nnx.Rngs):
    self.num_buckets, self.max_distance = num_buckets, max_distance
    self.bidirectional = bidirectional
    self.table = param(rngs, nnx.initializers.normal(0.02), (num_buckets, num_heads),
                       ("relpos_buckets", "heads"), param_dtype)

  def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    # [B, T], [B, S] -> [B, T, S]
    relative = k_positions[:, None, :] - q_positions[:, :, None]
    buckets = relative_bucket(relative, bidirectional=self.bidirectional,
                              num_buckets=self.num_buckets, max_distance=self.max_distance)
    # [B, T, S] -> [B, T, S, N] -> [B, N, T, S]
    return jnp.take(self.table[...].astype(jnp.float32), buckets, axis=0).transpose(0, 3, 1, 2)
