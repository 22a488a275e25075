"""GPT-style decoder: a causal stack over token embeddings, next-token logits."""
import jax
import jax.numpy as jnp
from flax import nnx

from model.layers import Embed, OutputHead
from model.stack import Stack, dtypes

# Published sizes, as config.model overrides. GPT-2 small (Radford et al. 2019): 124M parameters.
# GPT-2 uses the tanh approximation of GELU, so the tiny size does too.
VARIANTS = {
    "tiny": dict(num_layers=4, embed_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                 max_length=128, activation="gelu_tanh"),
    "small": dict(num_layers=12, embed_dim=768, num_heads=12, head_dim=64, mlp_dim=3072,
                  max_length=1024, activation="gelu_tanh", norm_eps=1e-5, vocab_size=50257),
}


class Decoder(nnx.Module):
  """Causal language model over packed rows of token ids."""

  INPUTS = ("inputs", "positions", "segment_ids")
  OPTIONAL_INPUTS = ("prefix",)  # prefix LM: positions read bidirectionally

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.cache_shape = (cfg.kv_heads, cfg.head_dim, jnp.dtype(cfg.dtype))
    self.embed = Embed(cfg.vocab_size, cfg.embed_dim, rngs=rngs, **dtypes(cfg))
    self.stack = Stack(cfg, cfg.num_layers, causal=True, cross=False, rngs=rngs)
    self.head = OutputHead(cfg.embed_dim, cfg.vocab_size, tied=cfg.tie_embeddings, rngs=rngs,
                           **dtypes(cfg))

  def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               prefix: jax.Array | None = None, *, rngs: nnx.Rngs | None = None,
               cache: dict | None = None):
    """Logits [B, T, V] for inputs, positions, segment_ids (and a prefix-LM prefix) [B, T];
    dropout only if rngs given. With a `cache` (see `init_cache`): (logits, cache)."""
    # [B, T] -> [B, T, D]
    out = self.stack(self.embed(inputs), positions, segment_ids, prefix=prefix, rngs=rngs,
                     cache=cache)
    x, cache = out if cache is not None else (out, None)
    logits = self.logits(x)
    return logits if cache is None else (logits, cache)

  def hidden(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
             prefix: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """The states [B, T, D] that `logits` projects, for the same inputs as __call__."""
    return self.stack(self.embed(inputs), positions, segment_ids, prefix=prefix, rngs=rngs)

  def logits(self, x: jax.Array) -> jax.Array:
    # [..., D] -> [..., V]
    return self.head(x, self.embed)

  def init_cache(self, batch: int, length: int) -> dict:
    """An empty key/value cache for decoding up to `length` positions per row."""
    return self.stack.init_cache(batch, length, *self.cache_shape)
