"""Initialisation schemes: which standard deviation each weight matrix starts with.

Every module draws its matrices from N(0, INIT_STD) (model/layers.py), GPT-2's and BERT's
initialisation ("normal"). The "t5" scheme is Mesh TensorFlow's T5 initialisation, which
HF transformers' T5 also follows: embeddings N(0, 1), every kernel N(0, 1/sqrt(fan-in)),
and the query's 1/sqrt(head_dim) folded in when attention logits are left unscaled
(scale_attention=False). A tied T5 scales its decoder output by 1/sqrt(D) before the shared
embedding (model/encoder_decoder.py): with "normal" embeddings its logits and their
gradients start about 50 times too small.
"""
import jax
from flax import nnx

from model.layers import INIT_STD

SCHEMES = ("normal", "t5")


def t5_std(path: tuple[str, ...], cfg) -> float | None:
  """The T5 scheme's standard deviation for the parameter at `path` (names of its modules,
  then its own), or None for one it leaves as drawn (norms, biases, LoRA adapters, tables
  T5 does not have)."""
  owner, name = path[-2], path[-1]
  d, heads, head_dim = cfg.embed_dim, cfg.num_heads, cfg.head_dim
  if "lora" in path:
    return None
  if owner == "embed" and name == "table":
    return 1.0
  if owner == "relative_bias" and name == "table":
    return d ** -0.5
  if name == "query":
    return (d * (1 if cfg.scale_attention else head_dim)) ** -0.5
  if name in ("key", "value"):
    return d ** -0.5
  if name == "out" and owner.endswith("attn"):
    return (heads * head_dim) ** -0.5
  if name == "kernel" and owner in ("wi", "wi_linear"):
    return d ** -0.5
  if name == "kernel" and owner == "wo":
    return cfg.mlp_dim ** -0.5
  if name == "kernel" and owner in ("head", "dense"):  # untied output, classifier
    return d ** -0.5
  return None


def apply(model: nnx.Module, cfg) -> None:
  """Rescales `model`'s freshly drawn N(0, INIT_STD) weights to `cfg.init`'s deviations."""
  if cfg.init == "normal":
    return
  params = nnx.state(model, nnx.Param)

  def rescale(key_path, x):
    # The module and parameter names; not the Variable's own `.value` attribute.
    std = t5_std(tuple(str(k.key) for k in key_path if hasattr(k, "key")), cfg)
    return x if std is None else x * (std / INIT_STD)
  nnx.update(model, jax.tree_util.tree_map_with_path(rescale, params))

