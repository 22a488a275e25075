"""GPT-style decoder with the prefix-LM objective (the T5 paper's "prefix LM"), tiny: each
row is split at a random point, the prefix is read bidirectionally, the rest predicted.

  python -m train.main --config=configs/gpt_prefixlm_tiny.py --workdir=/tmp/triform/gpt_plm
"""
from configs import gpt_tiny


def get_config():
  c = gpt_tiny.get_config()
  c.objective = "prefix_lm"
  c.sample.num_prompts = 0  # the samples would be read without a prefix
  return c
