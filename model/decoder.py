"""GPT-style decoder: a causal stack over token embeddings, next-token logits."""
import jax
import jax.numpy as jnp
from flax import nnx

from model import cost
from model.layers import Embed, OutputHead, maybe_classifier
from model.stack import Stack, dtypes

# Published sizes, as config.model overrides. GPT-2 small (Radford et al. 2019): 124M parameters.
# GPT-2 uses the tanh approximation of GELU, so the tiny size does too.
VARIANTS = {
    "tiny": dict(num_layers=4, embed_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                 max_length=128, activation="gelu_tanh"),
    "small": dict(num_layers=12, embed_dim=768, num_heads=12, head_dim=64, mlp_dim=3072,
                  max_length=1024, activation="gelu_tanh", norm_eps=1e-5, vocab_size=50257),
    "medium": dict(num_layers=24, embed_dim=1024, num_heads=16, head_dim=64, mlp_dim=4096,
                   max_length=1024, activation="gelu_tanh", norm_eps=1e-5, vocab_size=50257),
}


class Decoder(nnx.Module):
  """Causal language model over packed rows of token ids."""

  INPUTS = ("inputs", "positions", "segment_ids")
  OPTIONAL_INPUTS = ("prefix",)  # prefix LM: positions read bidirectionally
  GENERATION = "continuation"  # model/decoding.py continues a prompt
  USES_ATTENTION = True  # reads the attention and position settings
  OWN_SETTINGS = ()  # config.model fields only this family reads
  # Classification reads the last token's state: the only one that has seen the whole row.
  CLASSIFY_POOLING = "last"

  @staticmethod
  def stacks(cfg, length: int, encoder_length: int = 0, prefix: bool = False):
    """Its stack over a training row; a prefix-LM row reads its self-attention whole."""
    del encoder_length
    return (cost.StackShape("num_layers", cfg.num_layers, length, causal=not prefix),)

  @classmethod
  def forward_flops(cls, cfg, length: int, encoder_length: int = 0, scored: int = 0,
                    prefix: bool = False) -> float:
    return (cost.stacks_forward_flops(cfg, cls.stacks(cfg, length, encoder_length, prefix))
            + cost.output_flops(cfg, scored or length))

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.cache_shape = (cfg.kv_heads, cfg.head_dim, jnp.dtype(cfg.dtype))
    self.embed = Embed(cfg.vocab_size, cfg.embed_dim, rngs=rngs, **dtypes(cfg))
    self.stack = Stack(cfg, cfg.num_layers, causal=True, cross=False, rngs=rngs)
    self.head = OutputHead(cfg.embed_dim, cfg.vocab_size, tied=cfg.tie_embeddings, rngs=rngs,
                           **dtypes(cfg))
    self.classifier = maybe_classifier(cfg, rngs, **dtypes(cfg))

  def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               prefix: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Logits [B, T, V] for inputs, positions, segment_ids (and a prefix-LM prefix) [B, T];
    dropout only if rngs given."""
    return self.logits(self.hidden(inputs, positions, segment_ids, prefix, rngs=rngs))

  def hidden(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
             prefix: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """The states [B, T, D] that `logits` projects, for the same inputs as __call__."""
    # [B, T] -> [B, T, D]
    x, _ = self.stack(self.embed(inputs), positions, segment_ids, prefix=prefix, rngs=rngs)
    return x

  def decode(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array, *,
             cache: dict | None = None, prefix: jax.Array | None = None
             ) -> tuple[jax.Array, dict | None]:
    """(logits [B, T, V], cache) for inputs, positions, segment_ids (and a prefix LM's
    prefix) [B, T].

    Decoding: their keys and values go into a `cache` from `init_cache`, which they
    attend over and which comes back updated (None: no cache, None back).
    """
    # [B, T] -> [B, T, D]
    x, cache = self.stack(self.embed(inputs), positions, segment_ids, prefix=prefix, cache=cache)
    return self.logits(x), cache

  def logits(self, x: jax.Array) -> jax.Array:
    # [..., D] -> [..., V]
    return self.head(x, self.embed)

  def init_cache(self, batch: int, length: int) -> dict:
    """An empty key/value cache for decoding up to `length` positions per row."""
    return self.stack.init_cache(batch, length, *self.cache_shape)
