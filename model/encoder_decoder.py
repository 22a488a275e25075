"""T5-style encoder-decoder: a bidirectional encoder, a causal decoder that cross-attends
to it, one embedding table shared by both."""
import jax
import jax.numpy as jnp
from flax import nnx

from model import cost
from model.layers import Embed, OutputHead, maybe_classifier
from model.stack import Stack, dtypes

_T5 = dict(position="relative", norm="rmsnorm", norm_eps=1e-6, use_bias=False,
           scale_attention=False, init="t5", vocab_size=32128)
# Published sizes, as config.model overrides. T5-base (Raffel et al. 2020): 222,903,552
# parameters; T5.1.1-base (GeGLU, untied output): 247,577,856.
VARIANTS = {
    "tiny": dict(_T5, num_layers=2, embed_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                 activation="relu", vocab_size=4096),
    "base": dict(_T5, num_layers=12, embed_dim=768, num_heads=12, head_dim=64, mlp_dim=3072,
                 activation="relu"),
    "1_1_base": dict(_T5, num_layers=12, embed_dim=768, num_heads=12, head_dim=64, mlp_dim=2048,
                     activation="geglu", tie_embeddings=False),
}


class EncoderDecoder(nnx.Module):
  """Text-to-text model over packed encoder rows and packed decoder rows."""

  INPUTS = ("encoder_inputs", "encoder_positions", "encoder_segment_ids", "inputs", "positions",
            "segment_ids")
  OPTIONAL_INPUTS = ()
  GENERATION = "text_to_text"  # model/decoding.py maps a source row to an output
  USES_ATTENTION = True  # reads the attention and position settings
  OWN_SETTINGS = ("num_decoder_layers",)  # config.model fields only this family reads
  # Classification reads the decoder's state after its start token, which has attended
  # to the whole encoded row (as BART's classification head reads the decoder).
  CLASSIFY_POOLING = "last"

  @staticmethod
  def stacks(cfg, length: int, encoder_length: int = 0, prefix: bool = False):
    """The encoder over its row (default: `length`), the decoder over `length`."""
    del prefix  # an encoder-decoder's prefix is the encoder's row
    source = encoder_length or length
    return (cost.StackShape("num_layers", cfg.num_layers, source),
            cost.StackShape("num_decoder_layers", cfg.decoder_layers, length,
                            cross_length=source, causal=True))

  @classmethod
  def forward_flops(cls, cfg, length: int, encoder_length: int = 0, scored: int = 0,
                    prefix: bool = False) -> float:
    return (cost.stacks_forward_flops(cfg, cls.stacks(cfg, length, encoder_length, prefix))
            + cost.output_flops(cfg, scored or length))

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.cache_shape = (cfg.kv_heads, cfg.head_dim, jnp.dtype(cfg.dtype))
    self.embed = Embed(cfg.vocab_size, cfg.embed_dim, rngs=rngs, **dtypes(cfg))
    self.encoder = Stack(cfg, cfg.num_layers, causal=False, cross=False, rngs=rngs)
    self.decoder = Stack(cfg, cfg.decoder_layers, causal=True, cross=True, rngs=rngs)
    self.head = OutputHead(cfg.embed_dim, cfg.vocab_size, tied=cfg.tie_embeddings, rngs=rngs,
                           **dtypes(cfg))
    self.classifier = maybe_classifier(cfg, rngs, **dtypes(cfg))
    # A tied T5 rescales the decoder output by 1/sqrt(D) before the shared embedding.
    self.output_scale = cfg.embed_dim ** -0.5 if cfg.tie_embeddings else 1.0

  def encode(self, encoder_inputs: jax.Array, encoder_positions: jax.Array,
             encoder_segment_ids: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    # [B, S] -> [B, S, D]
    encoded, _ = self.encoder(self.embed(encoder_inputs), encoder_positions, encoder_segment_ids,
                              rngs=rngs)
    return encoded

  def decode(self, encoded: jax.Array | None, encoder_segment_ids: jax.Array, inputs: jax.Array,
             positions: jax.Array, segment_ids: jax.Array, *, rngs: nnx.Rngs | None = None,
             cache: dict | None = None) -> tuple[jax.Array, dict | None]:
    """(logits [B, T, V], cache) of decoder rows [B, T] given the encoder's output [B, S, D].

    `cache`: from `init_cache`, which holds the encoder's projected keys and values,
    so `encoded` may be None; returned updated (None: no cache).
    """
    # [B, T] -> [B, T, D]
    x, cache = self.decoder(self.embed(inputs), positions, segment_ids, encoded=encoded,
                            encoder_segment_ids=encoder_segment_ids, rngs=rngs, cache=cache)
    return self.logits(x), cache

  def logits(self, x: jax.Array) -> jax.Array:
    """Decoder states to vocabulary logits: [..., D] -> [..., V]."""
    return self.head(x * self.output_scale, self.embed)

  def init_cache(self, encoded: jax.Array, length: int) -> dict:
    """A decoding cache for `length` decoder positions, with cross-attention's keys and
    values of `encoded` [B, S, D] computed once."""
    cache = self.decoder.init_cache(encoded.shape[0], length, *self.cache_shape)
    return cache | self.decoder.cross_cache(encoded)

  def __call__(self, encoder_inputs, encoder_positions, encoder_segment_ids, inputs, positions,
               segment_ids, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.logits(self.hidden(encoder_inputs, encoder_positions, encoder_segment_ids,
                                   inputs, positions, segment_ids, rngs=rngs))

  def hidden(self, encoder_inputs, encoder_positions, encoder_segment_ids, inputs, positions,
             segment_ids, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """The decoder's states [B, T, D] that `logits` projects, for the same inputs as __call__."""
    encoded = self.encode(encoder_inputs, encoder_positions, encoder_segment_ids, rngs=rngs)
    x, _ = self.decoder(self.embed(inputs), positions, segment_ids, encoded=encoded,
                        encoder_segment_ids=encoder_segment_ids, rngs=rngs)
    return x
