"""Building blocks shared by every family.

Einsum letters, used in shape comments and contractions across model/:
  B batch, T query length, S key length, D model width, N heads, K kv heads,
  H head dim, F MLP width, V vocab, L layers.

Every parameter is created through `param`, which records its logical axis
names (one per dimension). train/sharding.py maps those names to mesh axes with
the rules in the config; model code never names a mesh axis.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Sequence[str],
          dtype: jnp.dtype) -> nnx.Param:
  """A parameter of `shape` annotated with one logical axis name per dimension."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {tuple(axes)} do not match shape {tuple(shape)}")
  # Sharding is applied once for the whole state in train/sharding.py, so the
  # per-variable eager sharding of Flax is switched off.
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(axes),
                   eager_sharding=False)


class Embed(nnx.Module):
  """Token embedding, also usable as the tied output projection."""

  def __init__(self, vocab_size: int, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.table = param(rngs, nnx.initializers.normal(0.02), (vocab_size, dim),
                       ("vocab", "embed"), param_dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    # [B, T] -> [B, T, D]
    return jnp.take(self.table[...].astype(self.dtype), ids, axis=0)

  def attend(self, x: jax.Array) -> jax.Array:
    # [B, T, D] -> [B, T, V]
    return jnp.einsum("BTD,VD->BTV", x, self.table[...].astype(self.dtype))


class LayerNorm(nnx.Module):
  """LayerNorm with scale and bias, computed in float32 for stability."""

  def __init__(self, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs, eps: float = 1e-5):
    self.dtype, self.eps = dtype, eps
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)
    self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("embed",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    # [B, T, D] -> [B, T, D]
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class Mlp(nnx.Module):
  """Position-wise feed-forward block: D -> F -> D with GELU."""

  def __init__(self, dim: int, mlp_dim: int, *, dropout_rate: float, dtype, param_dtype,
               rngs: nnx.Rngs):
    self.dtype = dtype
    init = nnx.initializers.normal(0.02)
    self.wi = param(rngs, init, (dim, mlp_dim), ("embed", "mlp"), param_dtype)
    self.bi = param(rngs, nnx.initializers.zeros, (mlp_dim,), ("mlp",), param_dtype)
    self.wo = param(rngs, init, (mlp_dim, dim), ("mlp", "embed"), param_dtype)
    self.bo = param(rngs, nnx.initializers.zeros, (dim,), ("embed",), param_dtype)
    self.dropout = nnx.Dropout(dropout_rate)

  def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    # [B, T, D] -> [B, T, F]
    h = jnp.einsum("BTD,DF->BTF", x, self.wi[...].astype(self.dtype)) + self.bi[...].astype(self.dtype)
    h = jax.nn.gelu(h)
    # [B, T, F] -> [B, T, D]
    y = jnp.einsum("BTF,FD->BTD", h, self.wo[...].astype(self.dtype)) + self.bo[...].astype(self.dtype)
    return self.dropout(y, rngs=rngs, deterministic=rngs is None)
