"""Span corruption and MLM masking: exact counts, even spread, lossless, deterministic."""
import subprocess
import sys

import numpy as np
import pytest

from train import noise

SENTINELS = np.arange(999, 899, -1)  # span i -> id 999 - i, counting down as in T5


@pytest.mark.parametrize("inputs, raw, targets", [(512, 568, 114), (128, 141, 29)])
def test_raw_length_fills_the_inputs_exactly(inputs, raw, targets):
  """T5's published pairs (T5X base_c4_pretrain: inputs 512, targets 114)."""
  assert noise.raw_length(inputs, 0.15, 3.0) == (raw, targets)
  assert noise.corrupted_lengths(raw, 0.15, 3.0) == (inputs, targets)
  assert noise.corrupted_lengths(raw + 1, 0.15, 3.0)[0] > inputs


def _spans(mask):
  return int((mask & ~np.concatenate([[False], mask[:-1]])).sum())


def test_every_mask_has_exact_counts_and_spans_spread_evenly():
  length, examples = 568, 10_000
  noise_per_position = np.zeros(length)
  for i in range(examples):
    mask = noise.noise_mask(length, 0.15, 3.0, noise.example_rng(0, i))
    assert mask.sum() == 85 and _spans(mask) == 28, i  # round(568 * .15), round(85 / 3)
    noise_per_position += mask
  # 8 stretches of 71 positions: each holds its share of the noise within 5%
  # (sampling error over 710,000 draws is ~0.3%; the un-rotated T5 layout
  # puts 18% more noise in the last stretch and fails this).
  share = noise_per_position.reshape(8, 71).sum(1) / noise_per_position.sum()
  np.testing.assert_allclose(share, 1 / 8, rtol=0.05)


@pytest.mark.parametrize("length", [2, 3, 10, 141, 568])
def test_corrupted_example_rebuilds_the_original_exactly(length):
  rng = noise.example_rng(7, length)
  tokens = rng.integers(5, 800, length).astype(np.int32)
  mask = noise.noise_mask(length, 0.15, 3.0, rng)
  inputs, targets = noise.corrupt_spans(tokens, mask, SENTINELS, eos=1)
  assert (len(inputs), len(targets)) == noise.corrupted_lengths(length, 0.15, 3.0)
  assert inputs[-1] == targets[-1] == 1
  # Put each target span back at its sentinel.
  spans, current = {}, None
  for t in targets[:-1]:
    if t in SENTINELS:
      current = int(t)
      spans[current] = []
    else:
      spans[current].append(int(t))
  rebuilt = [x for t in inputs[:-1] for x in (spans[int(t)] if t in SENTINELS else [int(t)])]
  np.testing.assert_array_equal(rebuilt, tokens)
  # Sentinels are used in order, one per span, counting down from the top.
  used = [int(t) for t in inputs if t in SENTINELS]
  assert used == list(SENTINELS[:_spans(mask)])


def test_mlm_selects_15_percent_and_splits_80_10_10():
  rng_tokens = np.random.default_rng(0)
  selected_total = candidates_total = 0
  outcomes = np.zeros(3)  # masked, random, kept
  index = 0
  while selected_total < 100_000:
    tokens = rng_tokens.integers(0, 1000, 512).astype(np.int32)
    candidates = tokens >= 10  # ids below 10 play the special tokens
    inputs, selected = noise.mlm_mask(tokens, candidates, noise.example_rng(3, index), rate=0.15,
                                      mask_id=4, random_ids=(10, 1000))
    index += 1
    assert not (selected & ~candidates).any()  # specials are never selected
    np.testing.assert_array_equal(inputs[~selected], tokens[~selected])
    masked = selected & (inputs == 4)
    kept = selected & (inputs == tokens)
    outcomes += [masked.sum(), (selected & ~masked & ~kept).sum(), kept.sum()]
    selected_total += selected.sum()
    candidates_total += candidates.sum()
  # A random replacement can draw the original id (1 in 990); it counts as kept,
  # which moves ~0.01 points from the 10% random share to the kept share.
  np.testing.assert_allclose(outcomes / selected_total, [0.8, 0.1, 0.1], atol=0.01)
  assert abs(selected_total / candidates_total - 0.15) < 0.01


def test_whole_word_masking_takes_words_whole():
  tokens = np.arange(100, 160).astype(np.int32)
  starts = np.zeros(60, bool)
  starts[::4] = True  # words of 4 tokens
  inputs, selected = noise.mlm_mask(tokens, np.ones(60, bool), noise.example_rng(0, 0), rate=0.2,
                                    mask_id=4, random_ids=(10, 1000), word_starts=starts)
  assert selected.sum() == 12
  words = selected.reshape(15, 4)
  assert (words.all(1) | ~words.any(1)).all()


def test_same_example_index_same_masks_in_another_process():
  code = ("from train import noise; import numpy as np; "
          "m = noise.noise_mask(568, .15, 3., noise.example_rng(11, 123456)); "
          "print(''.join('1' if x else '0' for x in m))")
  other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  here = noise.noise_mask(568, 0.15, 3.0, noise.example_rng(11, 123456))
  assert other.stdout.strip() == "".join("1" if x else "0" for x in here)
  assert not np.array_equal(here, noise.noise_mask(568, 0.15, 3.0, noise.example_rng(11, 123457)))
