"""GPT-style tiny decoder fine-tuned to classify standard-library functions by package.

  python -m train.main --config=configs/gpt_finetune.py --workdir=/tmp/triform/gpt_finetune \
      --config.init_from=/tmp/triform/gpt_tiny
  python -m train.main --config=configs/gpt_finetune.py:lora --workdir=/tmp/triform/gpt_lora \
      --config.init_from=/tmp/triform/gpt_tiny

The init_from workdir is `configs/gpt_tiny.py`'s run; without it the model trains from scratch.
"""
from configs import common
from model import decoder


def get_config(arg=None):
  c = common.base_config()
  c.model.family = "decoder"
  c.objective = "causal_lm"
  # Width 128 sees about twice the tokens of width 256 in the same CPU minutes,
  # and ended lower at equal wall time when both were tried.
  common.apply_variant(c, decoder.VARIANTS["tiny"])
  common.tiny_training(c)
  common.finetuning(c, arg)
  return c
