"""GPT-style decoder: a causal stack over token embeddings, next-token logits."""
import jax
from flax import nnx

from model.layers import Embed, OutputHead
from model.stack import Stack, dtypes

# Published sizes, as config.model overrides. GPT-2 small (Radford et al. 2019): 124M parameters.
VARIANTS = {
    "tiny": dict(num_layers=4, embed_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                 max_length=128),
    "small": dict(num_layers=12, embed_dim=768, num_heads=12, head_dim=64, mlp_dim=3072,
                  max_length=1024, activation="gelu_tanh", norm_eps=1e-5, vocab_size=50257),
}


class Decoder(nnx.Module):
  """Causal language model over packed rows of token ids."""

  INPUTS = ("inputs", "positions", "segment_ids")
  OPTIONAL_INPUTS = ("prefix",)  # prefix LM: positions read bidirectionally

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.embed = Embed(cfg.vocab_size, cfg.embed_dim, rngs=rngs, **dtypes(cfg))
    self.stack = Stack(cfg, cfg.num_layers, causal=True, cross=False, rngs=rngs)
    self.head = OutputHead(cfg.embed_dim, cfg.vocab_size, tied=cfg.tie_embeddings, rngs=rngs,
                           **dtypes(cfg))

  def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               prefix: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Logits [B, T, V] for inputs, positions, segment_ids (and a prefix-LM prefix) [B, T];
    dropout only if rngs given."""
    # [B, T] -> [B, T, D]
    x = self.stack(self.embed(inputs), positions, segment_ids, prefix=prefix, rngs=rngs)
    # [B, T, D] -> [B, T, V]
    return self.head(x, self.embed)
