"""BERT-style tiny encoder fine-tuned on a built-in task from the standard library.

  python -m train.main --config=configs/bert_finetune.py --workdir=/tmp/triform/bert_finetune \
      --config.init_from=/tmp/triform/bert_tiny
  python -m train.main --config=configs/bert_finetune.py:lora --workdir=/tmp/triform/bert_lora \
      --config.init_from=/tmp/triform/bert_tiny

The argument picks the task and LoRA (configs/common.finetuning: package or swap, the
classification tasks; lora), e.g. `:swap,lora`. The init_from workdir is `configs/bert_tiny.py`'s run;
without it the model trains from scratch.
"""
from configs import common, bert_tiny


def get_config(arg=None):
  return common.finetuning(bert_tiny.get_config(), arg)
