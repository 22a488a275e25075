"""HuggingFace tensor names and layouts against triform's parameter tree, both ways.

One rule per HF tensor: (its name, our parameter's path, how the two are laid
out). The same tables read and write, so an import followed by an export gives
back the names transformers wrote. Arrays are numpy; nothing here needs torch.
"""
import dataclasses
import math
import re

import numpy as np
from flax import nnx, traverse_util

from model import build_model
from model.config import ModelConfig
from model.layers import ACTIVATIONS
from model.stack import stack_layers, unstack_layers

ARCHITECTURES = {"BertForMaskedLM": "encoder", "GPT2LMHeadModel": "decoder",
                 "T5ForConditionalGeneration": "encoder_decoder"}
ARCHITECTURE_OF = {family: arch for arch, family in ARCHITECTURES.items()}

# (embedding, output matrix) tensor names of each family.
OUTPUT = {"encoder": ("bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"),
          "decoder": ("transformer.wte.weight", "lm_head.weight"),
          "encoder_decoder": ("shared.weight", "lm_head.weight")}

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


def _bert_rules(cfg: ModelConfig) -> list:
  e = "bert.embeddings."
  rules = [(e + "word_embeddings.weight", ("embed", "table"), "copy"),
           (e + "position_embeddings.weight", ("stack", "positions", "table"), "copy"),
           *_norm(e + "LayerNorm", ("stack", "embed_norm"), True),
           *_dense("cls.predictions.transform.dense", ("mlm_dense",), "linear", True),
           *_norm("cls.predictions.transform.LayerNorm", ("mlm_norm",), True),
           ("cls.predictions.bias", ("head_bias",), "copy")]
  if cfg.num_token_types:
    rules.append((e + "token_type_embeddings.weight", ("token_types", "table"), "copy"))
  if not cfg.tie_embeddings:
    rules.append(("cls.predictions.decoder.weight", ("head", "kernel"), "linear"))
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


def _gpt2_rules(cfg: ModelConfig) -> list:
  rules = [("transformer.wte.weight", ("embed", "table"), "copy"),
           ("transformer.wpe.weight", ("stack", "positions", "table"), "copy"),
           *_norm("transformer.ln_f", ("stack", "final_norm"), True)]
  if not cfg.tie_embeddings:
    rules.append(("lm_head.weight", ("head", "kernel"), "linear"))
  for i in range(cfg.num_layers):
    hf, ours = f"transformer.h.{i}.", ("stack", "layers", i)
    rules += _norm(hf + "ln_1", ours + ("self_attn_norm",), True)
    # attn.q/k/v are the thirds of attn.c_attn (split by _gpt2_split).
    rules += _attention(hf + "attn.", ours + ("self_attn",), ("q", "k", "v", "c_proj"),
                        conv=True, bias=True)
    rules += _norm(hf + "ln_2", ours + ("mlp_norm",), True)
    rules += _dense(hf + "mlp.c_fc", ours + ("mlp", "wi"), "copy", True)
    rules += _dense(hf + "mlp.c_proj", ours + ("mlp", "wo"), "copy", True)
  return rules


def _t5_rules(cfg: ModelConfig) -> list:
  rules = [("shared.weight", ("embed", "table"), "copy")]
  if not cfg.tie_embeddings:
    rules.append(("lm_head.weight", ("head", "kernel"), "linear"))
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
        rules += _attention(hf + "1.EncDecAttention.", ours + ("cross_attn",), qkvo, conv=False,
                            bias=False)
        rules += _norm(hf + "1.layer_norm", ours + ("cross_attn_norm",), False)
      ff = f"{hf}{2 if cross else 1}."
      wi = ([("wi_0", "wi"), ("wi_1", "wi_linear")] if gated else [("wi", "wi")]) + [("wo", "wo")]
      for name, our in wi:
        rules += _dense(f"{ff}DenseReluDense.{name}", ours + ("mlp", our), "linear", False)
      rules += _norm(ff + "layer_norm", ours + ("mlp_norm",), False)
  return rules


RULES = {"encoder": _bert_rules, "decoder": _gpt2_rules, "encoder_decoder": _t5_rules}

# Tensors a checkpoint may hold that the model does not need: copies (dropped if equal to
# the tensor named) and what the HF architecture itself ignores (buffers, BERT's pooler and
# next-sentence head, a cross-attention position table T5 never uses).
DUPLICATES = {
    "encoder": {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                "cls.predictions.decoder.bias": "cls.predictions.bias"},
    "decoder": {"lm_head.weight": "transformer.wte.weight"},
    "encoder_decoder": {"lm_head.weight": "shared.weight",
                        "encoder.embed_tokens.weight": "shared.weight",
                        "decoder.embed_tokens.weight": "shared.weight"},
}
UNUSED = {
    "encoder": r"bert\.embeddings\.position_ids|bert\.pooler\..*|cls\.seq_relationship\..*",
    "decoder": r"transformer\.h\.\d+\.attn\.(masked_)?bias",
    "encoder_decoder": r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias"
                       r"\.weight",
}


def normalize_names(family: str, tensors: dict) -> dict:
  """Names as transformers 5 writes them: BERT's old gamma/beta, GPT-2's bare names."""
  if family == "encoder":
    return {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight",
                   re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)): v
            for k, v in tensors.items()}
  if family == "decoder":
    tensors = {k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}": v
               for k, v in tensors.items()}
    return _gpt2_split(tensors)
  return dict(tensors)


def _gpt2_split(tensors: dict) -> dict:
  """c_attn [D, 3*N*H] (queries, keys, values side by side) -> attn.q, attn.k, attn.v."""
  out = {}
  for name, t in tensors.items():
    match = re.fullmatch(r"(.*\.attn\.)c_attn\.(weight|bias)", name)
    if not match:
      out[name] = t
      continue
    for part, third in zip("qkv", np.split(t, 3, axis=-1)):
      out[f"{match[1]}{part}.{match[2]}"] = third
  return out


def _gpt2_merge(tensors: dict) -> dict:
  """The inverse of `_gpt2_split`."""
  out = {}
  for name, t in tensors.items():
    match = re.fullmatch(r"(.*\.attn\.)([qkv])\.(weight|bias)", name)
    if not match:
      out[name] = t
    elif match[2] == "q":
      parts = [tensors[f"{match[1]}{p}.{match[3]}"] for p in "qkv"]
      out[f"{match[1]}c_attn.{match[3]}"] = np.concatenate(parts, axis=-1)
  return out


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


def _map_layers(tree: dict, fn) -> dict:
  """`fn` applied to every `layers` subtree (one per stack)."""
  return {k: fn(v) if k == "layers" else _map_layers(v, fn) if isinstance(v, dict) else v
          for k, v in tree.items()}


def _abstract_params(cfg: ModelConfig) -> dict:
  abstract = nnx.eval_shape(lambda: build_model(cfg, 0))
  return nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def params_from_hf(cfg: ModelConfig, tensors: dict) -> tuple[dict, list[str]]:
  """(params for `cfg`, names of the checkpoint tensors dropped) from normalised HF tensors."""
  unrolled = dataclasses.replace(cfg, scan_layers=False)
  wanted = traverse_util.flatten_dict(_abstract_params(unrolled))
  rules = RULES[cfg.family](unrolled)
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
    source = DUPLICATES[cfg.family].get(name)
    if source in tensors and np.array_equal(tensors[name], tensors[source]):
      dropped.append(name)
    elif re.fullmatch(UNUSED[cfg.family], name):
      dropped.append(name)
    else:
      left.append(name)
  if left:
    more = ", ..." if len(left) > 4 else ""
    raise ValueError(f"{len(left)} checkpoint tensors have no place in "
                     f"{ARCHITECTURE_OF[cfg.family]} as triform builds it: "
                     f"{', '.join(left[:4])}{more}")
  params = traverse_util.unflatten_dict(flat)
  if cfg.scan_layers:
    params = _map_layers(params, stack_layers)
  return params, dropped


def params_to_hf(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
  """HF tensors (float32, transformers' names) of triform params for `cfg`."""
  if cfg.scan_layers:
    params = _map_layers(params, unstack_layers)
  flat = traverse_util.flatten_dict(params)
  unrolled = dataclasses.replace(cfg, scan_layers=False)
  tensors = {name: _to_hf(layout, np.asarray(flat.pop(path), np.float32))
             for name, path, layout in RULES[cfg.family](unrolled)}
  if flat:
    raise ValueError(f"params {sorted(map(str, flat))[:3]} have no HF name")
  return _gpt2_merge(tensors) if cfg.family == "decoder" else tensors
