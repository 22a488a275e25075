"""T5-style tiny encoder-decoder fine-tuned on a built-in task from the standard library.

  python -m train.main --config=configs/t5_finetune.py --workdir=/tmp/triform/t5_finetune \
      --config.init_from=/tmp/triform/t5_tiny
  python -m train.main --config=configs/t5_finetune.py:lora --workdir=/tmp/triform/t5_lora \
      --config.init_from=/tmp/triform/t5_tiny

The argument picks the task and LoRA (configs/common.finetuning: package, swap, name or
body; lora), e.g. `:name,lora`. The init_from workdir is `configs/t5_tiny.py`'s run;
without it the model trains from scratch.
"""
from configs import common, t5_tiny


def get_config(arg=None):
  return common.finetuning(t5_tiny.get_config(), arg)
