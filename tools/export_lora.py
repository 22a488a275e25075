"""A LoRA run's adapters, exported: merged into the kernels, and alone in HF PEFT's format.

  python -m tools.export_lora --workdir=/tmp/triform/bert_lora \
      --merged_dir=/tmp/triform/bert_merged --peft_dir=/tmp/triform/bert_peft
  python -m tools.convert_hf export --triform_dir=/tmp/triform/bert_merged --out_dir=/tmp/hf

--merged_dir gets an ordinary pretrained directory (train/pretrained.py: config.json +
params/, model.lora_rank 0) that generation, evaluation, `init_from` and tools.convert_hf
read like any converted model. --peft_dir gets `adapter_config.json` +
`adapter_model.safetensors`, which `peft.PeftModel.from_pretrained` loads into the
transformers model that tools.convert_hf exports from the same base.
"""
import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import safetensors.numpy
from flax import traverse_util

from model import lora, model_config
from model.stack import unstack_layers
from tools import hf_params
from train import pretrained
from train.experiment import Experiment


def peft_tensors(cfg, params: dict) -> tuple[list, dict, bool]:
  """(HF module names adapted, PEFT's tensors by name, whether the modules are Conv1D) of
  `params` of a model with LoRA config `cfg`."""
  arch = hf_params.FAMILIES[cfg.family]
  if cfg.scan_layers:
    params = hf_params.map_layers(params, unstack_layers)
  flat = traverse_util.flatten_dict(params)
  modules, tensors, conv = [], {}, False
  for name, path, layout in arch.rules(dataclasses.replace(cfg, scan_layers=False)):
    parent, leaf = path[:-1], path[-1]
    adapter = parent + (("lora",) if leaf == "kernel" else (f"{leaf}_lora",))
    if adapter + ("a",) not in flat:
      continue
    if layout == "conv_qkv":
      raise ValueError(f"LoRA on {name.rsplit('.', 2)[0]}'s queries, keys or values: "
                       f"{arch.name} fuses them in one c_attn module, which PEFT adapts whole; "
                       "adapt out, wi or wo only to export to PEFT")
    a, b = np.asarray(flat[adapter + ("a",)]), np.asarray(flat[adapter + ("b",)])
    rank = a.shape[-1]
    module = name[:-len(".weight")]
    modules.append(module)
    conv = conv or layout.startswith("conv") or layout == "copy"
    # Ours: x [.., in] -> (x A) B with A [in, R], B [R, out]; PEFT's: A [R, in], B [out, R].
    tensors[f"base_model.model.{module}.lora_A.weight"] = a.reshape(-1, rank).T.copy()
    tensors[f"base_model.model.{module}.lora_B.weight"] = b.reshape(rank, -1).T.copy()
  return modules, tensors, conv


def write_peft(out_dir: str, cfg, params: dict, base: str = "") -> list[str]:
  modules, tensors, conv = peft_tensors(cfg, params)
  os.makedirs(out_dir, exist_ok=True)
  adapter_config = {
      "peft_type": "LORA", "r": cfg.lora_rank, "lora_alpha": cfg.lora_alpha,
      "lora_dropout": cfg.lora_dropout, "target_modules": modules, "bias": "none",
      "fan_in_fan_out": conv, "base_model_name_or_path": base or None, "task_type": None,
      "inference_mode": True}
  with open(os.path.join(out_dir, "adapter_config.json"), "w", encoding="utf-8") as f:
    json.dump(adapter_config, f, indent=2)
  safetensors.numpy.save_file({k: v.astype(np.float32) for k, v in tensors.items()},
                              os.path.join(out_dir, "adapter_model.safetensors"))
  return [f"{len(modules)} adapted modules -> {out_dir} (PEFT LoRA, r={cfg.lora_rank})"]


def export(workdir: str, merged_dir: str = "", peft_dir: str = "") -> list[str]:
  """Writes the merged model and/or the PEFT adapters of `workdir`'s latest checkpoint."""
  config = pretrained.load_config(workdir)
  if not config.model.get("lora_rank", 0):
    raise ValueError(f"{workdir} trained no LoRA adapters (config.model.lora_rank=0)")
  params = Experiment(config).restore(workdir).params
  lines = []
  if peft_dir:
    lines += write_peft(peft_dir, model_config(config), params, config.init_from)
  if merged_dir:
    merged = lora.merged(params, config.model.lora_alpha / config.model.lora_rank)
    config.model.lora_rank = 0
    pretrained.save_params(merged_dir, config, merged)
    lines.append(f"{workdir} -> {merged_dir}: adapters of {config.model.lora_targets} merged")
  return lines


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m tools.export_lora",
                                   description=__doc__.split("\n\n")[0])
  path = os.path.expanduser  # the shell leaves ~ in --x=~/y
  parser.add_argument("--workdir", required=True, type=path,
                      help="a run with config.model.lora_rank > 0")
  parser.add_argument("--merged_dir", default="", type=path, help="gets config.json + params/")
  parser.add_argument("--peft_dir", default="", type=path,
                      help="gets adapter_config.json + adapter_model.safetensors")
  args = parser.parse_args(argv)
  try:
    if not (args.merged_dir or args.peft_dir):
      raise ValueError("give --merged_dir, --peft_dir or both")
    lines = export(args.workdir, args.merged_dir, args.peft_dir)
  except (ValueError, OSError) as e:  # bad input: one line, as the other tools
    sys.exit(f"error: {e}")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
