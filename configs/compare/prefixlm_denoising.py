"""Prefix LM, denoising: one row holds the corrupted text, read both ways, then
its spans, predicted causally; only the spans are scored.

  python -m train.main --config=configs/compare/prefixlm_denoising.py --workdir=/tmp/cmp/prefixlm_denoising
"""
from configs import compare, gpt_tiny


def get_config():
  c = compare.table_decoder(gpt_tiny.get_config())
  c.objective = "span_corruption"
  c.decoder_prefix = "bidirectional"
  c.sample.num_prompts = 0  # prompts would be read without the inputs it was trained on
  return c
