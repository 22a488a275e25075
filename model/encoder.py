"""BERT-style encoder: a bidirectional stack, a masked-LM head and an optional pooler."""
import jax
import jax.numpy as jnp
from flax import nnx

from model.layers import ACTIVATIONS, Dense, Embed, OutputHead, maybe_bias, add_bias
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
  OPTIONAL_INPUTS = ()

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
    self.pooler = (Dense(cfg.embed_dim, cfg.embed_dim, ("embed", "mlp"), use_bias=True, **kw)
                   if cfg.pooler else None)

  def encode(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
             token_types: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Hidden states [B, T, D] for inputs, positions, segment_ids (and token types) [B, T]."""
    # [B, T] -> [B, T, D]
    x = self.embed(inputs)
    if self.token_types is not None:
      x = x + self.token_types(jnp.zeros_like(inputs) if token_types is None else token_types)
    return self.stack(x, positions, segment_ids, rngs=rngs)

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
    x = self.mlm_norm(self.act(self.mlm_dense(x)))
    return add_bias(self.head(x, self.embed), self.head_bias)

  def pool(self, hidden: jax.Array) -> jax.Array:
    """The row's first hidden state through a tanh layer, for classification: [B, T, D] -> [B, D]."""
    if self.pooler is None:
      raise ValueError("this encoder has no pooler; set config.model.pooler=True")
    return jnp.tanh(self.pooler(hidden[:, 0]))
