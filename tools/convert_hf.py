"""Command line: HuggingFace checkpoints into triform models, and back.

  python -m tools.convert_hf import --hf_dir=DIR --out_dir=DIR [--scan_layers]
  python -m tools.convert_hf export --triform_dir=DIR --out_dir=DIR

An HF directory holds `config.json` and `model.safetensors` (or the shards a
`model.safetensors.index.json` names) of a BertForMaskedLM, GPT2LMHeadModel or
T5ForConditionalGeneration (T5 v1.0: relu, tied and rescaled output; v1.1:
gated-gelu, separate lm_head). Tensors are read and written with safetensors'
numpy API, so neither direction needs torch. The triform side is the
pretrained directory of train/pretrained.py (config.json + orbax params/);
import also keeps the source's own config as `hf_config.json`, so that export
gives back its special token ids.

Nothing is downloaded: fetch a checkpoint directory first (e.g. with `hf download`).
"""
import argparse
import json
import os
import shutil
import sys
from typing import NamedTuple

import ml_collections
import numpy as np
import safetensors.numpy

from configs.common import base_config
from model import model_config
from model.config import ModelConfig
from tools.hf_params import (ARCHITECTURE_OF, ARCHITECTURES, OUTPUT, normalize_names,
                             params_from_hf, params_to_hf)
from train import pretrained, tokenizer

OBJECTIVES = {"encoder": "mlm", "decoder": "causal_lm", "encoder_decoder": "span_corruption"}

# transformers' ACT2FN names -> ours: its "gelu" is the exact erf form, "gelu_new" the tanh one.
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                  "gelu_pytorch_tanh": "gelu_tanh"}
# T5's feed_forward_proj; "gated-gelu" means the tanh form (transformers maps it to gelu_new).
T5_FEED_FORWARD = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gated-gelu": "geglu",
                   "gated-gelu_new": "geglu", "gated-silu": "swiglu"}
EXPORT_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new"}
EXPORT_T5_FEED_FORWARD = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new",
                          "geglu": "gated-gelu", "swiglu": "gated-silu"}

# The transformers defaults of the fields read here, for config.json files that omit them.
HF_DEFAULTS = {
    "encoder": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                    hidden_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                    layer_norm_eps=1e-12, tie_word_embeddings=True,
                    position_embedding_type="absolute", is_decoder=False,
                    add_cross_attention=False),
    "decoder": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                    n_inner=None, activation_function="gelu_new", resid_pdrop=0.1,
                    layer_norm_epsilon=1e-5, scale_attn_weights=True,
                    scale_attn_by_inverse_layer_idx=False, add_cross_attention=False,
                    tie_word_embeddings=True),
    "encoder_decoder": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                            num_decoder_layers=None, num_heads=8,
                            relative_attention_num_buckets=32,
                            relative_attention_max_distance=128, dropout_rate=0.1,
                            layer_norm_epsilon=1e-6, feed_forward_proj="relu", n_positions=512),
}
# Special token ids an exported config carries: the source's (hf_config.json) if it was
# imported, else triform's tokenizer ids. Encoder-decoder targets are shifted right with
# PAD, as in T5 (train/objectives.py), so PAD starts the decoder.
SPECIAL_TOKENS = {
    "encoder": dict(pad_token_id=tokenizer.PAD_ID),
    "decoder": dict(bos_token_id=tokenizer.BOS_ID, eos_token_id=tokenizer.EOS_ID),
    "encoder_decoder": dict(pad_token_id=tokenizer.PAD_ID, eos_token_id=tokenizer.EOS_ID,
                            decoder_start_token_id=tokenizer.PAD_ID),
}
TOKEN_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
              "decoder_start_token_id")


# ---------------------------------------------------------------------------------------
# HF directories
# ---------------------------------------------------------------------------------------

def read_hf(hf_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json as a dict, every tensor by name) of an HF checkpoint directory."""
  if not os.path.isdir(hf_dir):
    raise FileNotFoundError(f"{hf_dir} is not a directory")
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{config_path} not found; is {hf_dir} a HuggingFace checkpoint?")
  with open(config_path, encoding="utf-8") as f:
    hf = json.load(f)
  architecture(hf)  # before reading gigabytes of an unsupported model
  tensors = {}
  for path in _safetensors_files(hf_dir):
    try:
      tensors.update(safetensors.numpy.load_file(path))
    except TypeError as e:  # numpy has no bfloat16
      raise ValueError(f"{path}: {e}; re-save the checkpoint in float32") from None
  return hf, tensors


def _safetensors_files(hf_dir: str) -> list[str]:
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.isfile(index):
    with open(index, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    return [os.path.join(hf_dir, shard) for shard in shards]
  single = os.path.join(hf_dir, "model.safetensors")
  if not os.path.isfile(single):
    raise FileNotFoundError(f"no model.safetensors in {hf_dir}; re-save a pytorch_model.bin "
                            "checkpoint with save_pretrained(..., safe_serialization=True)")
  return [single]


def write_hf(out_dir: str, hf: dict, tensors: dict[str, np.ndarray]) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2, sort_keys=True)
  tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
  # transformers refuses safetensors files without a framework tag.
  safetensors.numpy.save_file(tensors, os.path.join(out_dir, "model.safetensors"),
                              metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------
# Configs, both ways
# ---------------------------------------------------------------------------------------

def architecture(hf: dict) -> str:
  """The family of the one supported architecture an HF config names."""
  archs = hf.get("architectures") or []
  if len(archs) != 1 or archs[0] not in ARCHITECTURES:
    raise ValueError(f"unsupported architecture {archs or hf.get('model_type')!r}; "
                     f"supported: {', '.join(ARCHITECTURES)}")
  return ARCHITECTURES[archs[0]]


def _option(hf: dict, key: str, supported: dict | tuple):
  """hf[key] if it is one of `supported`, else a ValueError naming the option."""
  value = hf[key]
  if value not in supported:
    raise ValueError(f"unsupported HF option {key}={value!r}; supported: "
                     f"{', '.join(map(repr, supported))}")
  return supported[value] if isinstance(supported, dict) else value


def _bert_model(hf: dict) -> dict:
  _option(hf, "position_embedding_type", ("absolute",))
  _option(hf, "is_decoder", (False,))
  _option(hf, "add_cross_attention", (False,))
  width, heads = hf["hidden_size"], hf["num_attention_heads"]
  return dict(num_layers=hf["num_hidden_layers"], embed_dim=width, num_heads=heads,
              head_dim=width // heads, mlp_dim=hf["intermediate_size"],
              max_length=hf["max_position_embeddings"], norm_position="post",
              norm_eps=float(hf["layer_norm_eps"]),
              activation=_option(hf, "hidden_act", HF_ACTIVATIONS),
              num_token_types=hf["type_vocab_size"], use_bias=True,
              dropout_rate=float(hf["hidden_dropout_prob"]))


def _gpt2_model(hf: dict) -> dict:
  _option(hf, "scale_attn_by_inverse_layer_idx", (False,))
  _option(hf, "add_cross_attention", (False,))
  width, heads = hf["n_embd"], hf["n_head"]
  return dict(num_layers=hf["n_layer"], embed_dim=width, num_heads=heads,
              head_dim=width // heads, mlp_dim=hf["n_inner"] or 4 * width,
              max_length=hf["n_positions"], norm_eps=float(hf["layer_norm_epsilon"]),
              activation=_option(hf, "activation_function", HF_ACTIVATIONS), use_bias=True,
              scale_attention=bool(hf["scale_attn_weights"]),
              dropout_rate=float(hf["resid_pdrop"]))


def _t5_model(hf: dict) -> dict:
  return dict(num_layers=hf["num_layers"],
              num_decoder_layers=hf["num_decoder_layers"] or hf["num_layers"],
              embed_dim=hf["d_model"], num_heads=hf["num_heads"], head_dim=hf["d_kv"],
              mlp_dim=hf["d_ff"], max_length=hf["n_positions"], position="relative",
              relative_buckets=hf["relative_attention_num_buckets"],
              relative_max_distance=hf["relative_attention_max_distance"], norm="rmsnorm",
              norm_eps=float(hf["layer_norm_epsilon"]), use_bias=False, scale_attention=False,
              activation=_option(hf, "feed_forward_proj", T5_FEED_FORWARD),
              dropout_rate=float(hf["dropout_rate"]))


def _tied(family: str, hf: dict, tensors: dict) -> bool:
  """Whether the output projection is the input embedding, as transformers 5 loads it.

  A checkpoint holding a separate output matrix that differs from the
  embedding is untied whatever `tie_word_embeddings` says. T5 is the odd one:
  triform ties exactly when the decoder output is rescaled by d_model**-0.5
  (v1.0), so a v1.1 model whose lm_head happens to share the embedding
  becomes an untied one holding a copy.
  """
  embed, output = OUTPUT[family]
  separate = output in tensors and not np.array_equal(tensors[output], tensors.get(embed))
  if family != "encoder_decoder":
    tied = hf.get("tie_word_embeddings", True) and not separate
    if not tied and output not in tensors:
      raise ValueError(f"tie_word_embeddings is false but the checkpoint has no {output}")
    return tied
  # transformers < 5 rescales iff tie_word_embeddings; 5 writes scale_decoder_outputs.
  rescaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
  if rescaled and separate:
    raise ValueError("unsupported T5 layout: the decoder output is rescaled by d_model**-0.5 "
                     "but lm_head.weight differs from shared.weight (triform rescales exactly "
                     "when the output is tied)")
  return bool(rescaled)


def config_from_hf(hf: dict, tensors: dict) -> ml_collections.ConfigDict:
  """A full triform config (base_config + the checkpoint's architecture) for an HF model."""
  family = architecture(hf)
  hf = {**HF_DEFAULTS[family], **hf}
  c = base_config()
  c.objective = OBJECTIVES[family]
  c.model.family = family
  c.model.update({"encoder": _bert_model, "decoder": _gpt2_model,
                  "encoder_decoder": _t5_model}[family](hf))
  c.model.tie_embeddings = _tied(family, hf, tensors)
  c.data.vocab_size = hf["vocab_size"]
  c.data.seq_len = min(c.data.seq_len, c.model.max_length)
  return c


def _exportable(cfg: ModelConfig) -> None:
  """Raises ValueError naming the first setting the family's HF architecture cannot hold."""
  arch = ARCHITECTURE_OF[cfg.family]
  needs = dict(norm="layernorm", norm_position="pre", position="learned", use_bias=True,
               scale_attention=cfg.scale_attention, pooler=False)
  if cfg.family == "encoder":
    needs.update(norm_position="post", scale_attention=True)
  if cfg.family == "encoder_decoder":
    needs.update(norm="rmsnorm", position="relative", use_bias=False, scale_attention=False)
  activations = EXPORT_T5_FEED_FORWARD if cfg.family == "encoder_decoder" else EXPORT_ACTIVATIONS
  needs["activation"] = tuple(activations)
  if cfg.kv_heads != cfg.num_heads:
    needs["num_kv_heads"] = (0, cfg.num_heads)
  if cfg.family != "encoder_decoder" and cfg.num_heads * cfg.head_dim != cfg.embed_dim:
    needs["head_dim"] = cfg.embed_dim // cfg.num_heads
  if cfg.family == "encoder" and cfg.num_token_types < 1:
    needs["num_token_types"] = "at least 1"
  for field, value in needs.items():
    have = getattr(cfg, field)
    if have != value and not (isinstance(value, tuple) and have in value):
      raise ValueError(f"config.model.{field}={have!r} cannot be exported to {arch}, "
                       f"which needs {value!r}")


def hf_config(cfg: ModelConfig, source: dict | None = None) -> dict:
  """An HF config.json for `cfg`; special token ids from `source` (the imported config)."""
  _exportable(cfg)
  arch = ARCHITECTURE_OF[cfg.family]
  # triform has no dropout on attention probabilities.
  if cfg.family == "encoder":
    hf = dict(model_type="bert", hidden_size=cfg.embed_dim, num_hidden_layers=cfg.num_layers,
              num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
              hidden_act=EXPORT_ACTIVATIONS[cfg.activation],
              hidden_dropout_prob=cfg.dropout_rate, attention_probs_dropout_prob=0.0,
              max_position_embeddings=cfg.max_length, type_vocab_size=cfg.num_token_types,
              layer_norm_eps=cfg.norm_eps, position_embedding_type="absolute")
  elif cfg.family == "decoder":
    hf = dict(model_type="gpt2", n_embd=cfg.embed_dim, n_layer=cfg.num_layers,
              n_head=cfg.num_heads, n_inner=cfg.mlp_dim, n_positions=cfg.max_length,
              activation_function=EXPORT_ACTIVATIONS[cfg.activation],
              resid_pdrop=cfg.dropout_rate, embd_pdrop=cfg.dropout_rate, attn_pdrop=0.0,
              layer_norm_epsilon=cfg.norm_eps, scale_attn_weights=cfg.scale_attention)
  else:
    hf = dict(model_type="t5", d_model=cfg.embed_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
              num_layers=cfg.num_layers, num_decoder_layers=cfg.decoder_layers,
              num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_buckets,
              relative_attention_max_distance=cfg.relative_max_distance,
              dropout_rate=cfg.dropout_rate, layer_norm_epsilon=cfg.norm_eps,
              feed_forward_proj=EXPORT_T5_FEED_FORWARD[cfg.activation],
              is_encoder_decoder=True)
  tokens = SPECIAL_TOKENS[cfg.family]
  if source is not None:
    tokens = {k: source[k] for k in TOKEN_KEYS if k in source}
    if cfg.family == "encoder_decoder" and "pad_token_id" in tokens:
      tokens.setdefault("decoder_start_token_id", tokens["pad_token_id"])  # HF T5's convention
  return dict(hf, **tokens, architectures=[arch], vocab_size=cfg.vocab_size,
              tie_word_embeddings=cfg.tie_embeddings)


class Imported(NamedTuple):
  config: ml_collections.ConfigDict
  params: dict
  dropped: list[str]  # checkpoint tensors the model has no use for


def from_hf(hf: dict, tensors: dict, *, scan_layers: bool = False) -> Imported:
  """Config and params of an HF model given as (config.json dict, tensors by name)."""
  family = architecture(hf)
  tensors = normalize_names(family, tensors)
  config = config_from_hf(hf, tensors)
  config.model.scan_layers = scan_layers
  cfg = model_config(config)
  if family == "encoder_decoder" and not cfg.tie_embeddings:
    # A v1.1 model stored tied (as transformers 5 writes it) gets its own copy.
    tensors.setdefault("lm_head.weight", tensors["shared.weight"])
  return Imported(config, *params_from_hf(cfg, tensors))


def to_hf(config: ml_collections.ConfigDict, params: dict,
          source: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
  """(HF config.json dict, HF tensors) of a triform model; `source`: its imported HF config."""
  cfg = model_config(config)
  hf = hf_config(cfg, source)
  return hf, params_to_hf(cfg, params)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def import_hf(hf_dir: str, out_dir: str, *, scan_layers: bool = False) -> list[str]:
  """Converts the HF checkpoint in `hf_dir` to a pretrained directory; returns report lines."""
  if os.path.exists(os.path.join(out_dir, "params")):
    raise FileExistsError(f"{out_dir}/params already exists; choose a new --out_dir")
  hf, tensors = read_hf(hf_dir)
  imported = from_hf(hf, tensors, scan_layers=scan_layers)
  pretrained.save_params(out_dir, imported.config, imported.params)
  shutil.copy(os.path.join(hf_dir, "config.json"), os.path.join(out_dir, "hf_config.json"))
  m = imported.config.model
  lines = [f"{hf['architectures'][0]} -> {out_dir}: family {m.family}, {m.num_layers} layers, "
           f"width {m.embed_dim}, vocab {imported.config.data.vocab_size}, "
           f"tie_embeddings {m.tie_embeddings}"]
  if imported.dropped:
    lines.append(f"dropped {len(imported.dropped)} unused or duplicate tensors: "
                 f"{', '.join(imported.dropped)}")
  return lines


def export_hf(triform_dir: str, out_dir: str) -> list[str]:
  """Writes the pretrained directory `triform_dir` as an HF checkpoint in `out_dir`."""
  if not os.path.isdir(triform_dir):
    raise FileNotFoundError(f"{triform_dir} is not a directory")
  config, params = pretrained.load_params(triform_dir)
  source_path = os.path.join(triform_dir, "hf_config.json")
  source = None
  if os.path.isfile(source_path):
    with open(source_path, encoding="utf-8") as f:
      source = json.load(f)
  hf, tensors = to_hf(config, params, source)
  write_hf(out_dir, hf, tensors)
  return [f"{triform_dir} -> {out_dir}: {hf['architectures'][0]}, {len(tensors)} tensors"]


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m tools.convert_hf",
                                   description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  p = commands.add_parser("import", help="HF checkpoint directory -> triform pretrained directory")
  p.add_argument("--hf_dir", required=True, help="config.json + model.safetensors")
  p.add_argument("--out_dir", required=True, help="gets config.json, params/, hf_config.json")
  p.add_argument("--scan_layers", action="store_true", help="stack the layers for nnx.scan")
  p = commands.add_parser("export", help="triform pretrained directory -> HF checkpoint directory")
  p.add_argument("--triform_dir", required=True, help="written by import or by training")
  p.add_argument("--out_dir", required=True, help="gets config.json + model.safetensors")
  args = parser.parse_args(argv)
  try:
    if args.command == "import":
      lines = import_hf(args.hf_dir, args.out_dir, scan_layers=args.scan_layers)
    else:
      lines = export_hf(args.triform_dir, args.out_dir)
  except (ValueError, OSError) as e:  # bad input: one line, as the other tools
    sys.exit(f"error: {e}")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
