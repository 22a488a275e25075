"""GPT-style tiny decoder fine-tuned on a built-in task from the standard library.

  python -m train.main --config=configs/gpt_finetune.py --workdir=/tmp/triform/gpt_finetune \
      --config.init_from=/tmp/triform/gpt_tiny
  python -m train.main --config=configs/gpt_finetune.py:lora --workdir=/tmp/triform/gpt_lora \
      --config.init_from=/tmp/triform/gpt_tiny

The argument picks the task and LoRA (configs/common.finetuning: package, swap, name or
body; lora), e.g. `:name,lora`. The init_from workdir is `configs/gpt_tiny.py`'s run;
without it the model trains from scratch.
"""
from configs import common, gpt_tiny


def get_config(arg=None):
  return common.finetuning(gpt_tiny.get_config(), arg)
