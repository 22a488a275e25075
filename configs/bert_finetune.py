"""BERT-style tiny encoder fine-tuned to classify standard-library functions by package.

  python -m train.main --config=configs/bert_finetune.py --workdir=/tmp/triform/bert_finetune \
      --config.init_from=/tmp/triform/bert_tiny
  python -m train.main --config=configs/bert_finetune.py:lora --workdir=/tmp/triform/bert_lora \
      --config.init_from=/tmp/triform/bert_tiny

The init_from workdir is `configs/bert_tiny.py`'s run; without it the model trains from scratch.
"""
from configs import common
from model import encoder


def get_config(arg=None):
  c = common.base_config()
  c.model.family = "encoder"
  c.objective = "mlm"
  common.apply_variant(c, encoder.VARIANTS["tiny"])
  common.tiny_training(c)
  common.finetuning(c, arg)
  return c
