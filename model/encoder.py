"""BERT-style encoder: a bidirectional stack and a masked-LM head."""
import jax
import jax.numpy as jnp
from flax import nnx

from model import cost
from model.layers import (ACTIVATIONS, Dense, Embed, OutputHead, add_bias, constrain, maybe_bias,
                          maybe_classifier)
from model.stack import Stack, dtypes, make_norm

# Published sizes, as config.model overrides. BERT-base (Devlin et al. 2019): 110M parameters
# with the pooler; BertForMaskedLM (MLM head, no pooler) has 109,514,298.
VARIANTS = {
    "tiny": dict(num_layers=4, embed_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                 max_length=128),
    "base": dict(num_layers=12, embed_dim=768, num_heads=12, head_dim=64, mlp_dim=3072,
                 max_length=512, norm_position="post", norm_eps=1e-12, activation="gelu",
                 num_token_types=2, vocab_size=30522),
}


class Encoder(nnx.Module):
  """Bidirectional encoder over packed rows; logits for masked-token prediction."""

  INPUTS = ("inputs", "positions", "segment_ids")
  OPTIONAL_INPUTS = ("token_types",)  # BERT's segments A/B, with model.num_token_types
  GENERATION = "mask_filling"  # model/decoding.py fills masked positions
  USES_ATTENTION = True  # reads the attention and position settings
  OWN_SETTINGS = ("num_token_types",)  # config.model fields only this family reads
  # Classification reads the state of the row's first token (BOS), as BERT's [CLS].
  CLASSIFY_POOLING = "first"

  @staticmethod
  def stacks(cfg, length: int, encoder_length: int = 0, prefix: bool = False):
    del encoder_length, prefix
    return (cost.StackShape("num_layers", cfg.num_layers, length),)

  @classmethod
  def forward_flops(cls, cfg, length: int, encoder_length: int = 0, scored: int = 0,
                    prefix: bool = False) -> float:
    """The stack, and the MLM head's dense layer and projection on the scored positions."""
    scored = scored or length
    mlm_dense = 2 * scored * cfg.embed_dim * cfg.embed_dim
    return (cost.stacks_forward_flops(cfg, cls.stacks(cfg, length, encoder_length, prefix))
            + mlm_dense + cost.output_flops(cfg, scored))

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, **dtypes(cfg))
    self.act = ACTIVATIONS[cfg.activation][0]
    self.embed = Embed(cfg.vocab_size, cfg.embed_dim, **kw)
    self.token_types = (Embed(cfg.num_token_types, cfg.embed_dim, axes=("token_types", "embed"),
                              **kw) if cfg.num_token_types else None)
    self.stack = Stack(cfg, cfg.num_layers, causal=False, cross=False, rngs=rngs)
    # The MLM head transforms each hidden state once more before the vocabulary projection.
    self.mlm_dense = Dense(cfg.embed_dim, cfg.embed_dim, ("embed", "mlp"), use_bias=cfg.use_bias,
                           **kw)
    self.mlm_norm = make_norm(cfg, rngs)
    self.head = OutputHead(cfg.embed_dim, cfg.vocab_size, tied=cfg.tie_embeddings, **kw)
    self.head_bias = maybe_bias(cfg.use_bias, rngs, (cfg.vocab_size,), ("vocab",),
                                jnp.dtype(cfg.param_dtype))
    self.classifier = maybe_classifier(cfg, rngs, **dtypes(cfg))

  def encode(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
             token_types: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Hidden states [B, T, D] for inputs, positions, segment_ids (and token types) [B, T]."""
    # [B, T] -> [B, T, D]
    x = self.embed(inputs)
    if self.token_types is not None:
      x = x + self.token_types(jnp.zeros_like(inputs) if token_types is None else token_types)
    x, _ = self.stack(x, positions, segment_ids, rngs=rngs)
    return x

  def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               token_types: jax.Array | None = None, *,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Masked-LM logits [B, T, V]."""
    return self.logits(self.hidden(inputs, positions, segment_ids, token_types, rngs=rngs))

  def hidden(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
             token_types: jax.Array | None = None, *,
             rngs: nnx.Rngs | None = None) -> jax.Array:
    """The encoder's states [B, T, D] that `logits` turns into masked-LM logits."""
    return self.encode(inputs, positions, segment_ids, token_types, rngs=rngs)

  def logits(self, x: jax.Array) -> jax.Array:
    """The MLM head: dense, activation, norm, then the vocabulary projection.

    Pointwise over positions, so it may be given only the positions to score.
    """
    # [..., D] -> [..., V]
    # The dense layer's output is pinned whole along its features, rows over the batch
    # axes: left to XLA's partitioner, on a mesh with data, fsdp and tensor all above 1,
    # the norm after it got wrong gradients on the selected positions (tests/test_sharding).
    x = self.mlm_norm(constrain(self.act(self.mlm_dense(x))))
    return add_bias(self.head(x, self.embed), self.head_bias)
