"""Multi-head self-attention over packed rows.

Packed rows hold several documents; `segment_ids` (0 = padding) keep each token
attending only to its own document.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from model.layers import param


def segment_mask(segment_ids: jax.Array, causal: bool) -> jax.Array:
  """True where query t may attend to key s: same segment (and s <= t if causal).

  Padding (segment 0) attends only to padding, so no query row is fully masked
  and no NaN can reach the loss through a padded position.
  """
  # [B, T] -> [B, 1, T, S]
  mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
  if causal:
    t = segment_ids.shape[-1]
    mask &= jnp.tril(jnp.ones((t, t), bool))[None, None]
  return mask


class SelfAttention(nnx.Module):
  """Self-attention with separate q, k, v projections [D, N, H] and output [N, H, D]."""

  def __init__(self, dim: int, num_heads: int, head_dim: int, *, dropout_rate: float, dtype,
               param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    init = nnx.initializers.normal(0.02)
    qkv_shape, qkv_axes = (dim, num_heads, head_dim), ("embed", "heads", "head_dim")
    self.wq = param(rngs, init, qkv_shape, qkv_axes, param_dtype)
    self.wk = param(rngs, init, qkv_shape, qkv_axes, param_dtype)
    self.wv = param(rngs, init, qkv_shape, qkv_axes, param_dtype)
    self.wo = param(rngs, init, (num_heads, head_dim, dim), ("heads", "head_dim", "embed"),
                    param_dtype)
    self.dropout = nnx.Dropout(dropout_rate)

  def __call__(self, x: jax.Array, mask: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """x: [B, T, D]; mask: [B, 1, T, T] boolean (see `segment_mask`)."""
    cast = lambda w: w[...].astype(self.dtype)
    # [B, T, D] -> [B, T, N, H]
    q = jnp.einsum("BTD,DNH->BTNH", x, cast(self.wq))
    k = jnp.einsum("BSD,DNH->BSNH", x, cast(self.wk))
    v = jnp.einsum("BSD,DNH->BSNH", x, cast(self.wv))
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    # [B, T, N, H] -> [B, T, D]
    y = jnp.einsum("BTNH,NHD->BTD", out, cast(self.wo))
    return self.dropout(y, rngs=rngs, deterministic=rngs is None)
