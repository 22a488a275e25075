"""The settings a model is built from, read from `config.model` and checked at load time."""
import dataclasses

import ml_collections

from model.init import SCHEMES as INIT_SCHEMES
from model.layers import ACTIVATIONS, NORMS
from model.lora import TARGETS as LORA_TARGETS
from model.positions import POSITIONS
from model.stack import REMAT_POLICIES

DTYPES = ("float32", "bfloat16", "float16")
# Fields the project no longer has, with the value that meant what the code does now: a
# config saved before (a workdir's, a converted checkpoint's) still loads.
REMOVED = {"pooler": False}
CHOICES = {"position": POSITIONS, "norm": tuple(NORMS), "norm_position": ("pre", "post"),
           "activation": tuple(ACTIVATIONS), "remat": tuple(REMAT_POLICIES), "dtype": DTYPES,
           "param_dtype": DTYPES, "attention": ("einsum", "jax_nn", "cudnn"), "init": INIT_SCHEMES}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every architectural choice of the three families (configs/common.py documents each)."""
  family: str
  vocab_size: int
  num_layers: int
  embed_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  max_length: int
  num_kv_heads: int = 0
  num_decoder_layers: int = 0
  position: str = "learned"
  relative_buckets: int = 32
  relative_max_distance: int = 128
  rotary_base: float = 10_000.0
  norm: str = "layernorm"
  norm_position: str = "pre"
  norm_eps: float = 1e-5
  norm_grad_barrier: bool = True
  attention: str = "einsum"
  causal_block: int = 128
  activation: str = "gelu"
  use_bias: bool = True
  tie_embeddings: bool = True
  scale_attention: bool = True
  qk_norm: bool = False
  init: str = "normal"
  num_token_types: int = 0
  dropout_rate: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = False
  num_classes: int = 0
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: str = "query,value"

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def decoder_layers(self) -> int:
    return self.num_decoder_layers or self.num_layers


def check(cfg: ModelConfig, families) -> None:
  """Raises ValueError naming the config field of the first impossible setting."""
  def fail(field, message):
    raise ValueError(f"config.model.{field}={getattr(cfg, field)!r} {message}")

  if cfg.family not in families:
    fail("family", f"is not one of {sorted(families)}")
  for field, choices in CHOICES.items():
    if getattr(cfg, field) not in choices:
      fail(field, f"is not one of {list(choices)}")
  for field in ("vocab_size", "num_layers", "embed_dim", "num_heads", "head_dim", "mlp_dim",
                "max_length"):
    if getattr(cfg, field) < 1:
      fail(field, "must be a positive integer")
  for field in ("num_kv_heads", "num_decoder_layers", "num_token_types", "causal_block",
                "num_classes"):
    if getattr(cfg, field) < 0:
      fail(field, "must be >= 0")
  if not 0.0 <= cfg.dropout_rate < 1.0:
    fail("dropout_rate", "must be in [0, 1)")
  if cfg.lora_rank < 0:
    fail("lora_rank", "must be >= 0 (0: no LoRA)")
  if cfg.lora_rank:
    if not 0.0 <= cfg.lora_dropout < 1.0:
      fail("lora_dropout", "must be in [0, 1)")
    if cfg.lora_alpha <= 0:
      fail("lora_alpha", "must be positive")
    names = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    unknown = [t for t in names if t not in LORA_TARGETS]
    if not names or unknown:
      fail("lora_targets", f"must name kernels among {list(LORA_TARGETS)}, comma-separated")
  family = families[cfg.family]
  for owner, cls in families.items():
    for field in cls.OWN_SETTINGS:
      if owner != cfg.family and field not in family.OWN_SETTINGS and getattr(cfg, field):
        fail(field, f"is only for family {owner!r}")
  if not family.USES_ATTENTION:
    return
  if cfg.embed_dim % cfg.num_heads:
    fail("num_heads", f"must divide config.model.embed_dim={cfg.embed_dim}")
  if cfg.num_heads % cfg.kv_heads:
    fail("num_kv_heads", f"must divide config.model.num_heads={cfg.num_heads} "
         "(num_heads for multi-head, 1 for multi-query)")
  if cfg.qk_norm and not cfg.scale_attention:
    fail("qk_norm", "needs config.model.scale_attention=True: normalised queries and keys "
         "carry no initialisation scale to fold 1/sqrt(head_dim) into")
  if cfg.position == "rotary" and cfg.head_dim % 2:
    fail("head_dim", "must be even for rotary positions")
  if cfg.position == "sinusoidal" and cfg.embed_dim % 2:
    fail("embed_dim", "must be even for sinusoidal positions")
  if cfg.position == "relative" and (cfg.relative_buckets < 4 or
                                     cfg.relative_max_distance <= cfg.relative_buckets // 4):
    fail("relative_buckets", "needs >= 4 buckets and relative_max_distance > buckets / 4")


def from_config(config: ml_collections.ConfigDict, families) -> ModelConfig:
  """ModelConfig from `config.model` (+ the tokenizer's `config.data.vocab_size`), checked."""
  m = config.model
  for field, value in REMOVED.items():
    if field in m and m[field] != value:
      raise ValueError(f"config.model.{field}={m[field]!r}: the field was removed; only "
                       f"{value!r}, what the code does now, is accepted (from older configs)")
  fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
  unknown = sorted(set(m.keys()) - fields - set(REMOVED))
  if unknown:
    raise ValueError(f"config.model.{unknown[0]} is not a model setting; "
                     f"known: {sorted(fields)}")
  cfg = ModelConfig(vocab_size=config.data.vocab_size,
                    **{k: m[k] for k in m.keys() if k not in REMOVED})
  check(cfg, families)
  if (families[cfg.family].USES_ATTENTION and cfg.position == "learned"
      and cfg.max_length < config.data.seq_len):
    raise ValueError(f"config.model.max_length={cfg.max_length} is shorter than "
                     f"config.data.seq_len={config.data.seq_len}; raise max_length")
  return cfg
