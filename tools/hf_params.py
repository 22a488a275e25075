"""The HuggingFace architectures triform converts: their configs and tensors against ours.

One `Architecture` per HF model class (BERT, GPT-2, T5) holds all that differs
between them: its family and defaults, how its config.json maps to
config.model and back, and one rule per HF tensor: (its name, our parameter's
path, how the two are laid out). The same tables read and write, so an import
followed by an export gives back the names transformers wrote. Arrays are
numpy; nothing here needs torch.
"""
import abc
import dataclasses
import math
import re

import numpy as np
from flax import nnx, traverse_util

from model import build_model
from model.config import ModelConfig
from model.layers import ACTIVATIONS
from model.stack import stack_layers, unstack_layers
from train import tokenizer

# What an exported triform model's config names: the ids of a tokenizer trained here (pad,
# eos and bos do not depend on the vocabulary's size).
_TRAINED = tokenizer.Specials.trained(vocab_size=1 << 16)

# How an HF tensor is laid out against ours: (transposed, number of our leading axes that
# form its input side). torch.nn.Linear stores [out, in]; GPT-2's Conv1D and our kernels
# [in, out]. "copy" is the same array, "heads" a bias [N*H] that is ours [N, H].
LAYOUTS = {
    "linear": (True, 1),  # [out, in] <-> [in, out]
    "linear_qkv": (True, 1),  # [N*H, D] <-> [D, N, H]
    "linear_out": (True, 2),  # [D, N*H] <-> [N, H, D]
    "conv_qkv": (False, 1),  # [D, N*H] <-> [D, N, H]
    "conv_out": (False, 2),  # [N*H, D] <-> [N, H, D]
}

# transformers' ACT2FN names -> ours: its "gelu" is the exact erf form, "gelu_new" the tanh one.
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                  "gelu_pytorch_tanh": "gelu_tanh"}
# T5's feed_forward_proj; "gated-gelu" means the tanh form (transformers maps it to gelu_new).
T5_FEED_FORWARD = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gated-gelu": "geglu",
                   "gated-gelu_new": "geglu", "gated-silu": "swiglu"}
EXPORT_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new"}
EXPORT_T5_FEED_FORWARD = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new",
                          "geglu": "gated-gelu", "swiglu": "gated-silu"}
TOKEN_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
              "decoder_start_token_id")


def _option(hf: dict, key: str, supported: dict | tuple):
  """hf[key] if it is one of `supported`, else a ValueError naming the option."""
  value = hf[key]
  if value not in supported:
    raise ValueError(f"unsupported HF option {key}={value!r}; supported: "
                     f"{', '.join(map(repr, supported))}")
  return supported[value] if isinstance(supported, dict) else value


def _norm(hf: str, ours: tuple, bias: bool) -> list:
  return [(f"{hf}.weight", ours + ("scale",), "copy")] + (
      [(f"{hf}.bias", ours + ("bias",), "copy")] if bias else [])


def _dense(hf: str, ours: tuple, layout: str, bias: bool) -> list:
  return [(f"{hf}.weight", ours + ("kernel",), layout)] + (
      [(f"{hf}.bias", ours + ("bias",), "copy")] if bias else [])


def _attention(hf: str, ours: tuple, names: tuple, *, conv: bool, bias: bool) -> list:
  """Rules of one attention block; `names` are HF's query, key, value and output modules."""
  kind = "conv" if conv else "linear"
  rules = []
  for our, name in zip(("query", "key", "value", "out"), names):
    out = our == "out"
    rules.append((f"{hf}{name}.weight", ours + (our,), f"{kind}_{'out' if out else 'qkv'}"))
    if bias:
      rules.append((f"{hf}{name}.bias", ours + (f"{our}_bias",), "copy" if out else "heads"))
  return rules


@dataclasses.dataclass(frozen=True)
class Architecture(abc.ABC):
  """One HF model class as triform converts it; a subclass of its own holds its maps."""
  name: str  # as config.json's `architectures` lists it
  family: str  # config.model.family
  objective: str  # what an imported model trains on
  embedding: str  # tensor names of the input embedding ...
  output: str  # ... and of the output matrix
  defaults: dict  # transformers' defaults of the fields read, for files that omit them
  # Token ids an export carries when it has no imported config.json to take them from.
  special_tokens: dict
  activations: dict  # its activation names -> ours ...
  export_activations: dict  # ... and ours -> its
  export_fixed: dict  # config.model settings it has no option for
  own_head_dim: bool  # whether its config gives head_dim, rather than width // heads
  # Tensors a checkpoint may hold that the model does not need: copies (dropped if equal to
  # the tensor named) and a regex of what the HF model itself ignores.
  duplicates: dict
  unused: str

  @abc.abstractmethod
  def model_fields(self, hf: dict) -> dict:
    """config.model fields of an HF config.json (defaults filled in)."""

  @abc.abstractmethod
  def export_fields(self, cfg: ModelConfig) -> dict:
    """The config.json of `cfg` but for its token ids, vocabulary and tying."""

  @abc.abstractmethod
  def rules(self, cfg: ModelConfig) -> list:
    """(HF tensor name, our parameter path, layout) of every parameter of unrolled `cfg`."""

  def separate(self, tensors: dict) -> bool:
    """Whether the checkpoint holds an output matrix that differs from the embedding."""
    return self.output in tensors and not np.array_equal(tensors[self.output],
                                                         tensors.get(self.embedding))

  def tied(self, hf: dict, tensors: dict) -> bool:
    """Whether the output projection is the input embedding, as transformers 5 loads it: a
    separate output matrix in the checkpoint unties it whatever `tie_word_embeddings` says."""
    tied = hf.get("tie_word_embeddings", True) and not self.separate(tensors)
    if not tied and self.output not in tensors:
      raise ValueError(f"tie_word_embeddings is false but the checkpoint has no {self.output}")
    return tied

  def export_needs(self, cfg: ModelConfig) -> dict:
    """config.model field -> the value (or tuple of values) an export needs it to have."""
    # None of the exported architectures normalises its queries and keys.
    needs = dict(self.export_fixed, activation=tuple(self.export_activations), qk_norm=False)
    if cfg.kv_heads != cfg.num_heads:
      needs["num_kv_heads"] = (0, cfg.num_heads)
    if not self.own_head_dim and cfg.num_heads * cfg.head_dim != cfg.embed_dim:
      needs["head_dim"] = cfg.embed_dim // cfg.num_heads
    return needs

  def check_exportable(self, cfg: ModelConfig) -> None:
    """Raises ValueError naming the first setting of `cfg` this architecture cannot hold."""
    for field, value in self.export_needs(cfg).items():
      have = getattr(cfg, field)
      if have != value and not (isinstance(value, tuple) and have in value):
        raise ValueError(f"config.model.{field}={have!r} cannot be exported to {self.name}, "
                         f"which needs {value!r}")

  def tokens(self, source: dict | None) -> dict:
    """Special token ids of an export: those of `source` (the imported config), else ours."""
    if source is None:
      return dict(self.special_tokens)
    return {k: source[k] for k in TOKEN_KEYS if k in source}

  def normalize(self, tensors: dict) -> dict:
    """Checkpoint tensors under the names `rules` gives (as transformers 5 writes them)."""
    return dict(tensors)

  def join(self, tensors: dict) -> dict:
    """The inverse of what `normalize` splits: tensors as transformers writes them."""
    return tensors

  def droppable(self, name: str, tensors: dict) -> bool:
    """Whether tensor `name`, which no rule places, is a copy or one the HF model ignores."""
    source = self.duplicates.get(name)
    return ((source in tensors and np.array_equal(tensors[name], tensors[source]))
            or bool(re.fullmatch(self.unused, name)))


class _Bert(Architecture):
  """Post-norm encoder with learned positions, token types and an MLM head."""

  def model_fields(self, hf: dict) -> dict:
    _option(hf, "position_embedding_type", ("absolute",))
    _option(hf, "is_decoder", (False,))
    _option(hf, "add_cross_attention", (False,))
    width, heads = hf["hidden_size"], hf["num_attention_heads"]
    return dict(num_layers=hf["num_hidden_layers"], embed_dim=width, num_heads=heads,
                head_dim=width // heads, mlp_dim=hf["intermediate_size"],
                max_length=hf["max_position_embeddings"], norm_position="post",
                norm_eps=float(hf["layer_norm_eps"]),
                activation=_option(hf, "hidden_act", self.activations),
                num_token_types=hf["type_vocab_size"], use_bias=True,
                dropout_rate=float(hf["hidden_dropout_prob"]))

  def export_fields(self, cfg: ModelConfig) -> dict:
    # triform has no dropout on attention probabilities.
    return dict(model_type="bert", hidden_size=cfg.embed_dim, num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
                hidden_act=self.export_activations[cfg.activation],
                hidden_dropout_prob=cfg.dropout_rate, attention_probs_dropout_prob=0.0,
                max_position_embeddings=cfg.max_length, type_vocab_size=cfg.num_token_types,
                layer_norm_eps=cfg.norm_eps, position_embedding_type="absolute")

  def export_needs(self, cfg: ModelConfig) -> dict:
    needs = super().export_needs(cfg)
    if cfg.num_token_types < 1:
      needs["num_token_types"] = "at least 1"
    return needs

  def rules(self, cfg: ModelConfig) -> list:
    e = "bert.embeddings."
    rules = [(self.embedding, ("embed", "table"), "copy"),
             (e + "position_embeddings.weight", ("stack", "positions", "table"), "copy"),
             *_norm(e + "LayerNorm", ("stack", "embed_norm"), True),
             *_dense("cls.predictions.transform.dense", ("mlm_dense",), "linear", True),
             *_norm("cls.predictions.transform.LayerNorm", ("mlm_norm",), True),
             ("cls.predictions.bias", ("head_bias",), "copy")]
    if cfg.num_token_types:
      rules.append((e + "token_type_embeddings.weight", ("token_types", "table"), "copy"))
    if not cfg.tie_embeddings:
      rules.append((self.output, ("head", "kernel"), "linear"))
    for i in range(cfg.num_layers):
      hf, ours = f"bert.encoder.layer.{i}.", ("stack", "layers", i)
      rules += _attention(hf + "attention.", ours + ("self_attn",),
                          ("self.query", "self.key", "self.value", "output.dense"),
                          conv=False, bias=True)
      rules += _norm(hf + "attention.output.LayerNorm", ours + ("self_attn_norm",), True)
      rules += _dense(hf + "intermediate.dense", ours + ("mlp", "wi"), "linear", True)
      rules += _dense(hf + "output.dense", ours + ("mlp", "wo"), "linear", True)
      rules += _norm(hf + "output.LayerNorm", ours + ("mlp_norm",), True)
    return rules

  def normalize(self, tensors: dict) -> dict:
    """BERT's old LayerNorm gamma/beta are weight/bias."""
    return {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight",
                   re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)): v
            for k, v in tensors.items()}


BERT = _Bert(
    name="BertForMaskedLM", family="encoder", objective="mlm",
    embedding="bert.embeddings.word_embeddings.weight", output="cls.predictions.decoder.weight",
    defaults=dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                  num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                  hidden_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                  layer_norm_eps=1e-12, tie_word_embeddings=True,
                  position_embedding_type="absolute", is_decoder=False,
                  add_cross_attention=False),
    special_tokens=dict(pad_token_id=_TRAINED.pad_id),
    activations=HF_ACTIVATIONS, export_activations=EXPORT_ACTIVATIONS,
    export_fixed=dict(norm="layernorm", norm_position="post", position="learned",
                      use_bias=True, scale_attention=True),
    own_head_dim=False,
    duplicates={"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                "cls.predictions.decoder.bias": "cls.predictions.bias"},
    # A buffer; the pooler and next-sentence head serve only BERT's other heads.
    unused=r"bert\.embeddings\.position_ids|bert\.pooler\..*|cls\.seq_relationship\..*")


class _Gpt2(Architecture):
  """Pre-norm decoder with learned positions; Conv1D layers store kernels [in, out]."""

  def model_fields(self, hf: dict) -> dict:
    _option(hf, "scale_attn_by_inverse_layer_idx", (False,))
    _option(hf, "add_cross_attention", (False,))
    width, heads = hf["n_embd"], hf["n_head"]
    return dict(num_layers=hf["n_layer"], embed_dim=width, num_heads=heads,
                head_dim=width // heads, mlp_dim=hf["n_inner"] or 4 * width,
                max_length=hf["n_positions"], norm_eps=float(hf["layer_norm_epsilon"]),
                activation=_option(hf, "activation_function", self.activations), use_bias=True,
                scale_attention=bool(hf["scale_attn_weights"]),
                dropout_rate=float(hf["resid_pdrop"]))

  def export_fields(self, cfg: ModelConfig) -> dict:
    # triform has no dropout on attention probabilities.
    return dict(model_type="gpt2", n_embd=cfg.embed_dim, n_layer=cfg.num_layers,
                n_head=cfg.num_heads, n_inner=cfg.mlp_dim, n_positions=cfg.max_length,
                activation_function=self.export_activations[cfg.activation],
                resid_pdrop=cfg.dropout_rate, embd_pdrop=cfg.dropout_rate, attn_pdrop=0.0,
                layer_norm_epsilon=cfg.norm_eps, scale_attn_weights=cfg.scale_attention)

  def rules(self, cfg: ModelConfig) -> list:
    rules = [(self.embedding, ("embed", "table"), "copy"),
             ("transformer.wpe.weight", ("stack", "positions", "table"), "copy"),
             *_norm("transformer.ln_f", ("stack", "final_norm"), True)]
    if not cfg.tie_embeddings:
      rules.append((self.output, ("head", "kernel"), "linear"))
    for i in range(cfg.num_layers):
      hf, ours = f"transformer.h.{i}.", ("stack", "layers", i)
      rules += _norm(hf + "ln_1", ours + ("self_attn_norm",), True)
      # attn.q/k/v are the thirds of attn.c_attn (split by `normalize`).
      rules += _attention(hf + "attn.", ours + ("self_attn",), ("q", "k", "v", "c_proj"),
                          conv=True, bias=True)
      rules += _norm(hf + "ln_2", ours + ("mlp_norm",), True)
      rules += _dense(hf + "mlp.c_fc", ours + ("mlp", "wi"), "copy", True)
      rules += _dense(hf + "mlp.c_proj", ours + ("mlp", "wo"), "copy", True)
    return rules

  def normalize(self, tensors: dict) -> dict:
    """Older files' bare names get `transformer.`; c_attn [D, 3*N*H] (queries, keys, values
    side by side) becomes attn.q, attn.k, attn.v."""
    out = {}
    for name, t in tensors.items():
      name = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
      match = re.fullmatch(r"(.*\.attn\.)c_attn\.(weight|bias)", name)
      if not match:
        out[name] = t
        continue
      for part, third in zip("qkv", np.split(t, 3, axis=-1)):
        out[f"{match[1]}{part}.{match[2]}"] = third
    return out

  def join(self, tensors: dict) -> dict:
    out = {}
    for name, t in tensors.items():
      match = re.fullmatch(r"(.*\.attn\.)([qkv])\.(weight|bias)", name)
      if not match:
        out[name] = t
      elif match[2] == "q":
        parts = [tensors[f"{match[1]}{p}.{match[3]}"] for p in "qkv"]
        out[f"{match[1]}c_attn.{match[3]}"] = np.concatenate(parts, axis=-1)
    return out


GPT2 = _Gpt2(
    name="GPT2LMHeadModel", family="decoder", objective="causal_lm",
    embedding="transformer.wte.weight", output="lm_head.weight",
    defaults=dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                  n_inner=None, activation_function="gelu_new", resid_pdrop=0.1,
                  layer_norm_epsilon=1e-5, scale_attn_weights=True,
                  scale_attn_by_inverse_layer_idx=False, add_cross_attention=False,
                  tie_word_embeddings=True),
    special_tokens=dict(bos_token_id=_TRAINED.bos_id, eos_token_id=_TRAINED.eos_id),
    activations=HF_ACTIVATIONS, export_activations=EXPORT_ACTIVATIONS,
    # scale_attn_weights holds either setting of scale_attention.
    export_fixed=dict(norm="layernorm", norm_position="pre", position="learned", use_bias=True),
    own_head_dim=False,
    duplicates={"lm_head.weight": "transformer.wte.weight"},
    unused=r"transformer\.h\.\d+\.attn\.(masked_)?bias")  # causal-mask buffers


class _T5(Architecture):
  """Encoder-decoder with RMS norms, relative position buckets and no biases."""

  def model_fields(self, hf: dict) -> dict:
    return dict(num_layers=hf["num_layers"],
                num_decoder_layers=hf["num_decoder_layers"] or hf["num_layers"],
                embed_dim=hf["d_model"], num_heads=hf["num_heads"], head_dim=hf["d_kv"],
                mlp_dim=hf["d_ff"], max_length=hf["n_positions"], position="relative",
                relative_buckets=hf["relative_attention_num_buckets"],
                relative_max_distance=hf["relative_attention_max_distance"], norm="rmsnorm",
                norm_eps=float(hf["layer_norm_epsilon"]), use_bias=False, scale_attention=False,
                init="t5",
                activation=_option(hf, "feed_forward_proj", self.activations),
                dropout_rate=float(hf["dropout_rate"]))

  def export_fields(self, cfg: ModelConfig) -> dict:
    return dict(model_type="t5", d_model=cfg.embed_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
                num_layers=cfg.num_layers, num_decoder_layers=cfg.decoder_layers,
                num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_buckets,
                relative_attention_max_distance=cfg.relative_max_distance,
                dropout_rate=cfg.dropout_rate, layer_norm_epsilon=cfg.norm_eps,
                feed_forward_proj=self.export_activations[cfg.activation],
                is_encoder_decoder=True)

  def tied(self, hf: dict, tensors: dict) -> bool:
    """triform ties exactly when the decoder output is rescaled by d_model**-0.5 (v1.0), so a
    v1.1 model whose lm_head happens to share the embedding becomes an untied one holding a
    copy."""
    # transformers < 5 rescales iff tie_word_embeddings; 5 writes scale_decoder_outputs.
    rescaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    if rescaled and self.separate(tensors):
      raise ValueError("unsupported T5 layout: the decoder output is rescaled by d_model**-0.5 "
                       "but lm_head.weight differs from shared.weight (triform rescales exactly "
                       "when the output is tied)")
    return bool(rescaled)

  def tokens(self, source: dict | None) -> dict:
    tokens = super().tokens(source)
    if "pad_token_id" in tokens:
      tokens.setdefault("decoder_start_token_id", tokens["pad_token_id"])  # HF T5's convention
    return tokens

  def rules(self, cfg: ModelConfig) -> list:
    rules = [(self.embedding, ("embed", "table"), "copy")]
    if not cfg.tie_embeddings:
      rules.append((self.output, ("head", "kernel"), "linear"))
    gated = ACTIVATIONS[cfg.activation][1]
    for stack, num_layers in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers)):
      cross = stack == "decoder"
      # HF keeps the stack's one relative-position table in its first block.
      rules += [(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 (stack, "relative_bias", "table"), "copy"),
                *_norm(f"{stack}.final_layer_norm", (stack, "final_norm"), False)]
      for i in range(num_layers):
        hf, ours = f"{stack}.block.{i}.layer.", (stack, "layers", i)
        qkvo = ("q", "k", "v", "o")
        rules += _attention(hf + "0.SelfAttention.", ours + ("self_attn",), qkvo, conv=False,
                            bias=False)
        rules += _norm(hf + "0.layer_norm", ours + ("self_attn_norm",), False)
        if cross:
          rules += _attention(hf + "1.EncDecAttention.", ours + ("cross_attn",), qkvo,
                              conv=False, bias=False)
          rules += _norm(hf + "1.layer_norm", ours + ("cross_attn_norm",), False)
        ff = f"{hf}{2 if cross else 1}."
        wi = ([("wi_0", "wi"), ("wi_1", "wi_linear")] if gated else [("wi", "wi")]) + [("wo", "wo")]
        for name, our in wi:
          rules += _dense(f"{ff}DenseReluDense.{name}", ours + ("mlp", our), "linear", False)
        rules += _norm(ff + "layer_norm", ours + ("mlp_norm",), False)
    return rules


T5 = _T5(
    name="T5ForConditionalGeneration", family="encoder_decoder", objective="span_corruption",
    embedding="shared.weight", output="lm_head.weight",
    defaults=dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                  num_decoder_layers=None, num_heads=8, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128, dropout_rate=0.1,
                  layer_norm_epsilon=1e-6, feed_forward_proj="relu", n_positions=512),
    # Targets are shifted right with PAD, as in T5 (train/objectives.py): PAD starts the decoder.
    special_tokens=dict(pad_token_id=_TRAINED.pad_id, eos_token_id=_TRAINED.eos_id,
                        decoder_start_token_id=_TRAINED.pad_id),
    activations=T5_FEED_FORWARD, export_activations=EXPORT_T5_FEED_FORWARD,
    export_fixed=dict(norm="rmsnorm", norm_position="pre", position="relative", use_bias=False,
                      scale_attention=False),
    own_head_dim=True,  # d_kv
    duplicates={"lm_head.weight": "shared.weight", "encoder.embed_tokens.weight": "shared.weight",
                "decoder.embed_tokens.weight": "shared.weight"},
    # The decoder's cross attention has a position table T5 never uses.
    unused=r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight")

ARCHITECTURES = {a.name: a for a in (BERT, GPT2, T5)}  # by HF's name
FAMILIES = {a.family: a for a in ARCHITECTURES.values()}  # by config.model.family


# ---------------------------------------------------------------------------------------
# Parameters, both ways
# ---------------------------------------------------------------------------------------

def _hf_shape(layout: str, shape: tuple) -> tuple:
  if layout == "copy":
    return tuple(shape)
  if layout == "heads":
    return (math.prod(shape),)
  transposed, split = LAYOUTS[layout]
  matrix = (math.prod(shape[:split]), math.prod(shape[split:]))
  return matrix[::-1] if transposed else matrix


def _to_ours(layout: str, t: np.ndarray, shape: tuple) -> np.ndarray:
  if layout in LAYOUTS and LAYOUTS[layout][0]:
    t = t.T
  return t.reshape(shape)


def _to_hf(layout: str, p: np.ndarray) -> np.ndarray:
  p = np.asarray(p)
  if layout in LAYOUTS and LAYOUTS[layout][0]:
    return p.reshape(_hf_shape(layout, p.shape)[::-1]).T
  return p.reshape(_hf_shape(layout, p.shape))


def map_layers(tree: dict, fn) -> dict:
  """`fn` applied to every `layers` subtree (one per stack)."""
  return {k: fn(v) if k == "layers" else map_layers(v, fn) if isinstance(v, dict) else v
          for k, v in tree.items()}


def _abstract_params(cfg: ModelConfig) -> dict:
  abstract = nnx.eval_shape(lambda: build_model(cfg, 0))
  return nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def params_from_hf(cfg: ModelConfig, tensors: dict) -> tuple[dict, list[str]]:
  """(params for `cfg`, names of the checkpoint tensors dropped) from normalised HF tensors."""
  arch = FAMILIES[cfg.family]
  unrolled = dataclasses.replace(cfg, scan_layers=False)
  wanted = traverse_util.flatten_dict(_abstract_params(unrolled))
  rules = arch.rules(unrolled)
  flat = {}
  for name, path, layout in rules:
    if name not in tensors:
      raise ValueError(f"the checkpoint has no {name}")
    shape, expected = wanted[path].shape, _hf_shape(layout, wanted[path].shape)
    if tensors[name].shape != expected:
      raise ValueError(f"{name} has shape {tensors[name].shape}; its config.json implies "
                       f"{expected}")
    flat[path] = _to_ours(layout, tensors[name], shape).astype(wanted[path].dtype)
  missing = sorted(map(str, wanted.keys() - flat.keys()))
  if missing:  # a rule table out of step with the model code
    raise ValueError(f"no checkpoint tensor maps to {missing[:3]}")
  used = {name for name, _, _ in rules}
  dropped, left = [], []
  for name in sorted(tensors.keys() - used):
    (dropped if arch.droppable(name, tensors) else left).append(name)
  if left:
    more = ", ..." if len(left) > 4 else ""
    raise ValueError(f"{len(left)} checkpoint tensors have no place in {arch.name} as "
                     f"triform builds it: {', '.join(left[:4])}{more}")
  params = traverse_util.unflatten_dict(flat)
  if cfg.scan_layers:
    params = map_layers(params, stack_layers)
  return params, dropped


def params_to_hf(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
  """HF tensors (float32, transformers' names) of triform params for `cfg`."""
  arch = FAMILIES[cfg.family]
  if cfg.scan_layers:
    params = map_layers(params, unstack_layers)
  flat = traverse_util.flatten_dict(params)
  unrolled = dataclasses.replace(cfg, scan_layers=False)
  tensors = {name: _to_hf(layout, np.asarray(flat.pop(path), np.float32))
             for name, path, layout in arch.rules(unrolled)}
  if flat:
    raise ValueError(f"params {sorted(map(str, flat))[:3]} have no HF name")
  return arch.join(tensors)
