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
from tools.hf_params import ARCHITECTURES, FAMILIES, Architecture, params_from_hf, params_to_hf
from train import hf_tokenizer, pretrained

TOKENIZER_DIR = "tokenizer"  # under an imported directory: the checkpoint's tokenizer files


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

def architecture(hf: dict) -> Architecture:
  """The one supported architecture an HF config names."""
  archs = hf.get("architectures") or []
  if len(archs) != 1 or archs[0] not in ARCHITECTURES:
    raise ValueError(f"unsupported architecture {archs or hf.get('model_type')!r}; "
                     f"supported: {', '.join(ARCHITECTURES)}")
  return ARCHITECTURES[archs[0]]


def config_from_hf(hf: dict, tensors: dict) -> ml_collections.ConfigDict:
  """A full triform config (base_config + the checkpoint's architecture) for an HF model."""
  arch = architecture(hf)
  hf = {**arch.defaults, **hf}
  c = base_config()
  c.objective = arch.objective
  c.model.family = arch.family
  c.model.update(arch.model_fields(hf))
  c.model.tie_embeddings = arch.tied(hf, tensors)
  c.data.vocab_size = hf["vocab_size"]
  c.data.seq_len = min(c.data.seq_len, c.model.max_length)
  return c


def hf_config(cfg: ModelConfig, source: dict | None = None) -> dict:
  """An HF config.json for `cfg`; special token ids from `source` (the imported config)."""
  arch = FAMILIES[cfg.family]
  arch.check_exportable(cfg)
  return dict(arch.export_fields(cfg), **arch.tokens(source), architectures=[arch.name],
              vocab_size=cfg.vocab_size, tie_word_embeddings=cfg.tie_embeddings)


class Imported(NamedTuple):
  config: ml_collections.ConfigDict
  params: dict
  dropped: list[str]  # checkpoint tensors the model has no use for


def from_hf(hf: dict, tensors: dict, *, scan_layers: bool = False) -> Imported:
  """Config and params of an HF model given as (config.json dict, tensors by name)."""
  arch = architecture(hf)
  tensors = arch.normalize(tensors)
  config = config_from_hf(hf, tensors)
  config.model.scan_layers = scan_layers
  cfg = model_config(config)
  if not cfg.tie_embeddings and arch.embedding in tensors:
    # A T5 v1.1 model stored tied (as transformers 5 writes it) gets its own copy; BERT and
    # GPT-2 are untied only by an output matrix of their own (`Architecture.tied`).
    tensors.setdefault(arch.output, tensors[arch.embedding])
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
  tokenizer_dir = copy_tokenizer(hf_dir, out_dir)
  if tokenizer_dir:  # the run and tools.generate read text with the checkpoint's tokenizer
    hf_tokenizer.published(tokenizer_dir, imported.config.data.vocab_size)
    imported.config.data.tokenizer = tokenizer_dir
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


def copy_tokenizer(hf_dir: str, out_dir: str) -> str | None:
  """Copies the checkpoint's tokenizer files to out_dir/tokenizer; returns that directory
  (absolute), or None when the checkpoint has no tokenizer.json."""
  if not os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
    return None
  target = os.path.abspath(os.path.join(out_dir, TOKENIZER_DIR))
  os.makedirs(target, exist_ok=True)
  for name in hf_tokenizer.HF_FILES:
    if os.path.exists(os.path.join(hf_dir, name)):
      shutil.copy(os.path.join(hf_dir, name), os.path.join(target, name))
  return target


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
  path = dict(required=True, type=os.path.expanduser)  # ~ expanded: the shell leaves --x=~/y
  p.add_argument("--hf_dir", help="config.json + model.safetensors", **path)
  p.add_argument("--out_dir", help="gets config.json, params/, hf_config.json", **path)
  p.add_argument("--scan_layers", action="store_true", help="stack the layers for nnx.scan")
  p = commands.add_parser("export", help="triform pretrained directory or workdir -> HF checkpoint")
  p.add_argument("--triform_dir", help="written by import or by training", **path)
  p.add_argument("--out_dir", help="gets config.json + model.safetensors", **path)
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
