"""T5-style tiny encoder-decoder fine-tuned to classify standard-library functions by package.

  python -m train.main --config=configs/t5_finetune.py --workdir=/tmp/triform/t5_finetune \
      --config.init_from=/tmp/triform/t5_tiny
  python -m train.main --config=configs/t5_finetune.py:lora --workdir=/tmp/triform/t5_lora \
      --config.init_from=/tmp/triform/t5_tiny

The init_from workdir is `configs/t5_tiny.py`'s run; without it the model trains from scratch.
"""
from configs import common
from model import encoder_decoder


def get_config(arg=None):
  c = common.base_config()
  c.model.family = "encoder_decoder"
  c.objective = "span_corruption"
  common.apply_variant(c, encoder_decoder.VARIANTS["tiny"])
  common.tiny_training(c)
  common.finetuning(c, arg)
  return c
