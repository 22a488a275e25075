"""The random choices of the denoising objectives, as pure functions of a numpy Generator.

Each example's Generator comes from `example_rng(seed, index)`: the same
(config seed, global example index) gives the same masks on any host count,
after any restart and in any worker process. Nothing here touches numpy's or
Python's global random state.
"""
import numpy as np


def example_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
  """A counter-based generator keyed by (seed, example index, stream)."""
  return np.random.Generator(np.random.Philox(key=[seed, index], counter=[stream, 0, 0, 0]))


# ---------------------------------------------------------------- span corruption (T5)
# Raffel et al. 2020, section 3.1.4; t5.data.preprocessors.random_spans_noise_mask.

def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
  """(noise tokens, noise spans) of a row of `length` raw tokens."""
  num_noise = min(max(int(round(length * density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_span)), 1)
  return num_noise, num_spans


def corrupted_lengths(length: int, density: float, mean_span: float) -> tuple[int, int]:
  """(inputs, targets) lengths, EOS included, after corrupting `length` raw tokens.

  Inputs keep the clean tokens plus one sentinel per span; targets hold the
  noise tokens plus one sentinel per span.
  """
  num_noise, num_spans = span_counts(length, density, mean_span)
  return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def raw_length(inputs_length: int, density: float, mean_span: float) -> tuple[int, int]:
  """(raw length, targets length): the longest raw row whose inputs fit `inputs_length`."""
  if inputs_length < 4:
    raise ValueError(f"span corruption needs inputs of at least 4 tokens, not {inputs_length}")
  length = inputs_length
  while corrupted_lengths(length + 1, density, mean_span)[0] <= inputs_length:
    length += 1
  return length, corrupted_lengths(length, density, mean_span)[1]


def _random_segmentation(num_items: int, num_segments: int, rng) -> np.ndarray:
  """`num_segments` positive lengths summing to `num_items`, uniform over all such splits."""
  cuts = np.sort(rng.choice(num_items - 1, num_segments - 1, replace=False) + 1)
  return np.diff(np.concatenate([[0], cuts, [num_items]]))


def noise_mask(length: int, density: float, mean_span: float, rng) -> np.ndarray:
  """[length] bool: `span_counts` noise tokens in exactly that many non-empty spans.

  As T5: random span lengths, clean and noise spans alternating from a clean
  one. That layout always ends in noise (the last ~70 of 568 positions get 20%
  more of it), so the row is then rotated to start at a random clean token: the
  same spans, cut nowhere inside a noise span, spread evenly over the row.
  """
  num_noise, num_spans = span_counts(length, density, mean_span)
  noise = _random_segmentation(num_noise, num_spans, rng)
  clean = _random_segmentation(length - num_noise, num_spans, rng)
  # [2 * spans]: clean_0, noise_0, clean_1, noise_1, ...
  span_lengths = np.stack([clean, noise], 1).reshape(-1)
  mask = np.repeat(np.tile([False, True], num_spans), span_lengths)
  return np.roll(mask, -rng.choice(np.flatnonzero(~mask)))


def corrupt_spans(tokens: np.ndarray, mask: np.ndarray, sentinels: np.ndarray,
                  eos: int) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets): each noise span replaced by sentinel i in the inputs; the targets
  list sentinel i then span i's tokens; both end with EOS.

  tokens, mask: [L]; sentinels: ids of spans 0, 1, ... (at least the number of spans).
  """
  starts = mask & ~np.concatenate([[False], mask[:-1]])
  span_index = np.cumsum(starts) - 1
  # [L] -> [inputs]: clean tokens, and a sentinel at each noise span's first token.
  keep_in_inputs = ~mask | starts
  inputs = np.where(mask, sentinels[np.maximum(span_index, 0)], tokens)[keep_in_inputs]
  # [L] -> [targets]: a sentinel before each noise span, then its tokens.
  noise_positions = np.flatnonzero(mask)
  targets = np.insert(tokens[noise_positions], np.flatnonzero(starts[noise_positions]),
                      sentinels[:int(starts.sum())])
  return (np.append(inputs, eos).astype(np.int32), np.append(targets, eos).astype(np.int32))


# ---------------------------------------------------------------- masked LM (BERT)
# Devlin et al. 2019, section 3.1 and appendix A.1.

def mlm_mask(tokens: np.ndarray, candidates: np.ndarray, rng, *, rate: float, mask_id: int,
             random_ids: tuple[int, int], word_starts: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, selected): round(rate * candidates) positions selected; of those 80% become
  `mask_id`, 10% a uniform id in [random_ids), 10% stay.

  tokens, candidates: [T] (candidates: True where a token may be selected).
  word_starts: optional [T] bool; whole words are then selected together, until
  the budget is reached.
  """
  positions = np.flatnonzero(candidates)
  budget = int(round(rate * len(positions)))
  selected = np.zeros(len(tokens), bool)
  if budget == 0:
    return tokens.copy(), selected
  if word_starts is None:
    selected[rng.choice(positions, budget, replace=False)] = True
  else:
    # Word w covers its candidate positions; words are taken in random order.
    word_of = np.cumsum(word_starts | ~candidates)[positions]
    words = np.unique(word_of)
    taken = 0
    for word in rng.permutation(words):
      members = positions[word_of == word]
      if taken + len(members) > budget:
        continue
      selected[members] = True
      taken += len(members)
      if taken == budget:
        break
  choice = rng.random(len(tokens))
  random_tokens = rng.integers(random_ids[0], random_ids[1], len(tokens))
  inputs = np.where(selected & (choice < 0.8), mask_id, tokens)
  inputs = np.where(selected & (choice >= 0.8) & (choice < 0.9), random_tokens, inputs)
  return inputs.astype(tokens.dtype), selected
