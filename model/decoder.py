"""GPT-style decoder: learned positions, pre-LayerNorm blocks, tied output embedding."""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import SelfAttention, segment_mask
from model.layers import Embed, LayerNorm, Mlp, param


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The settings a decoder is built from (see configs/common.py for their meaning)."""
  vocab_size: int
  num_layers: int
  embed_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  max_length: int
  dropout_rate: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"


class Block(nnx.Module):
  """x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    dtypes = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    self.attn_norm = LayerNorm(cfg.embed_dim, rngs=rngs, **dtypes)
    self.attn = SelfAttention(cfg.embed_dim, cfg.num_heads, cfg.head_dim,
                              dropout_rate=cfg.dropout_rate, rngs=rngs, **dtypes)
    self.mlp_norm = LayerNorm(cfg.embed_dim, rngs=rngs, **dtypes)
    self.mlp = Mlp(cfg.embed_dim, cfg.mlp_dim, dropout_rate=cfg.dropout_rate, rngs=rngs, **dtypes)

  def __call__(self, x, mask, *, rngs=None):
    x = x + self.attn(self.attn_norm(x), mask, rngs=rngs)
    return x + self.mlp(self.mlp_norm(x), rngs=rngs)


class Decoder(nnx.Module):
  """Causal language model over packed rows of token ids."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtypes = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    self.embed = Embed(cfg.vocab_size, cfg.embed_dim, rngs=rngs, **dtypes)
    self.positions = param(rngs, nnx.initializers.normal(0.01), (cfg.max_length, cfg.embed_dim),
                           ("length", "embed"), dtypes["param_dtype"])
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
    self.final_norm = LayerNorm(cfg.embed_dim, rngs=rngs, **dtypes)

  def __call__(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array, *,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Logits [B, T, V] for tokens, positions, segment_ids [B, T]; dropout only if rngs given."""
    dtype = jnp.dtype(self.cfg.dtype)
    # [B, T] -> [B, T, D]
    x = self.embed(tokens) + jnp.take(self.positions[...].astype(dtype), positions, axis=0)
    mask = segment_mask(segment_ids, causal=True)
    for block in self.layers:
      x = block(x, mask, rngs=rngs)
    # [B, T, D] -> [B, T, V]
    return self.embed.attend(self.final_norm(x)).astype(jnp.float32)
