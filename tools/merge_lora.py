"""Folds a LoRA run's adapters into its kernels: an ordinary pretrained directory.

  python -m tools.merge_lora --workdir=/tmp/triform/gpt_lora --out_dir=/tmp/triform/gpt_merged
  python -m tools.convert_hf export --triform_dir=/tmp/triform/gpt_merged --out_dir=/tmp/hf

The output (train/pretrained.py: config.json + params/) has no adapters and
model.lora_rank 0; generation, evaluation, `init_from` and tools.convert_hf read it like
any converted model.
"""
import argparse
import sys

from model import lora
from train import pretrained
from train.experiment import Experiment


def merge_workdir(workdir: str, out_dir: str) -> list[str]:
  """Writes the merged parameters of `workdir`'s latest checkpoint to `out_dir`."""
  config = pretrained.load_config(workdir)
  if not config.model.get("lora_rank", 0):
    raise ValueError(f"{workdir} trained no LoRA adapters (config.model.lora_rank=0)")
  params = Experiment(config).restore(workdir).params
  merged = lora.merged(params, config.model.lora_alpha / config.model.lora_rank)
  config.model.lora_rank = 0
  pretrained.save_params(out_dir, config, merged)
  return [f"{workdir} -> {out_dir}: LoRA of {config.model.lora_targets} merged"]


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m tools.merge_lora",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a run with config.model.lora_rank > 0")
  parser.add_argument("--out_dir", required=True, help="gets config.json + params/")
  args = parser.parse_args(argv)
  try:
    lines = merge_workdir(args.workdir, args.out_dir)
  except (ValueError, OSError) as e:  # bad input: one line, as the other tools
    sys.exit(f"error: {e}")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
