"""BERT-style encoder, tiny: masked-LM pretraining on the built-in corpus, CPU minutes.

  python -m train.main --config=configs/bert_tiny.py --workdir=/tmp/triform/bert_tiny
"""
from configs import common
from model import encoder


def get_config():
  c = common.base_config()
  c.model.family = "encoder"
  c.objective = "mlm"
  common.apply_variant(c, encoder.VARIANTS["tiny"])
  common.tiny_training(c)
  # At this size masked LM stays at the unigram plateau for over 1,000 steps with learned
  # positions; with rotary ones it leaves it by step 600 (docs/finetuning.md). MLM scores 15%
  # of the tokens a step, so it gets three times the decoder's 400 steps.
  c.model.position = "rotary"
  c.train.num_steps = 1200
  c.sample.num_prompts = 0  # an encoder does not generate
  return c
