"""From an experiment config to a model: settings, construction, size and cost."""
import jax
import ml_collections
import numpy as np
from flax import nnx

from model.decoder import Decoder, DecoderConfig

FAMILIES = {"decoder": (Decoder, DecoderConfig)}
DTYPES = ("float32", "bfloat16", "float16")


def model_config(config: ml_collections.ConfigDict) -> DecoderConfig:
  """Model settings from `config.model` (+ the tokenizer's vocab size), checked for sense."""
  m = config.model
  if m.family not in FAMILIES:
    raise ValueError(f"config.model.family={m.family!r} is not one of {sorted(FAMILIES)}")
  for name in ("num_layers", "embed_dim", "num_heads", "head_dim", "mlp_dim", "max_length"):
    if m[name] < 1:
      raise ValueError(f"config.model.{name}={m[name]} must be a positive integer")
  for name in ("dtype", "param_dtype"):
    if m[name] not in DTYPES:
      raise ValueError(f"config.model.{name}={m[name]!r} is not one of {DTYPES}")
  if not 0.0 <= m.dropout_rate < 1.0:
    raise ValueError(f"config.model.dropout_rate={m.dropout_rate} must be in [0, 1)")
  if m.max_length < config.data.seq_len:
    raise ValueError(f"config.model.max_length={m.max_length} is shorter than "
                     f"config.data.seq_len={config.data.seq_len}; raise max_length")
  _, settings_cls = FAMILIES[m.family]
  fields = {f: m[f] for f in settings_cls.__dataclass_fields__ if f != "vocab_size"}
  return settings_cls(vocab_size=config.data.vocab_size, **fields)


def build_model(cfg: DecoderConfig, seed: int) -> nnx.Module:
  """A freshly initialised model; call under jax.jit / nnx.eval_shape for sharded or abstract init."""
  model_cls, _ = FAMILIES["decoder"]
  return model_cls(cfg, rngs=nnx.Rngs(params=seed))


def count_params(cfg: DecoderConfig) -> int:
  """Exact parameter count, from shapes only (nothing is allocated)."""
  abstract = nnx.eval_shape(lambda: build_model(cfg, 0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def flops_per_token(cfg: DecoderConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward = 3 x forward).

  Matmul parameters (all but norms, biases and the position table) cost
  2 FLOPs per weight per token forward; the tied output projection counts once
  more as a matmul. Attention scores and the weighted sum cost 2 * 2 * T * N * H
  per token per layer forward, counted in full as XLA computes them (the causal
  half is masked, not skipped).
  """
  d, f, n, h, v, l = (cfg.embed_dim, cfg.mlp_dim, cfg.num_heads, cfg.head_dim, cfg.vocab_size,
                      cfg.num_layers)
  matmul_weights = l * (4 * d * n * h + 2 * d * f) + v * d
  attention = l * 4 * seq_len * n * h
  return 3.0 * (2 * matmul_weights + attention)
