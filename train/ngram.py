"""Kneser-Ney n-gram baseline over token ids, scored in bits per byte like the models.

Interpolated modified Kneser-Ney (Chen & Goodman 1998, "An Empirical Study of
Smoothing Techniques for Language Modeling", Harvard TR-10-98): three discounts
per order, D1, D2 and D3+ for n-grams seen once, twice and more, estimated from
that order's count-of-counts n1..n4; `discounts="plain"` is interpolated
Kneser-Ney with one discount, D = n1 / (n1 + 2 n2), as they also evaluate.
Lower orders count distinct left contexts instead of occurrences, except for
n-grams that start with BOS, which cannot be extended left (KenLM's adjusted
counts, Heafield et al. 2013). Below the unigrams is the uniform distribution
over the whole vocabulary, so every id has nonzero probability and each
context's probabilities sum to 1.

The model reads rows as the transformers do: a target's history is the inputs
before it within its segment (BOS first), so the context restarts at each
segment start of a packed row, in fitting as in scoring. Fit on the train
split's rows and score the validation rows (train/input_pipeline.py with the
causal-LM objective) and the scored tokens and bytes are those of the models'
evaluation.

N-grams are packed into int64 keys (oldest token most significant), so
vocab_size ** order must stay below 2 ** 63 (order 5 at 4096 ids, 4 at 50k).
"""
import dataclasses

from absl import logging
import numpy as np


DISCOUNTS = ("modified", "plain")
# KenLM's --discount_fallback values, for orders whose count-of-counts leave a
# discount undefined or out of range (tiny corpora; the unigrams of a small vocabulary,
# where few ids have 1..4 distinct left contexts).
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def windows(batch: dict, order: int) -> np.ndarray:
  """[N, order] ids for each scored target (weight > 0): the `order - 1` inputs before it
  in its segment, oldest first, then the target; -1 before the segment's start."""
  inputs, segments = batch["inputs"], batch["segment_ids"]
  columns = [batch["targets"]]
  for back in range(order - 1):
    # The input `back` positions before the target's: its previous token, or BOS.
    shifted = np.pad(inputs, [(0, 0), (back, 0)], constant_values=-1)[:, :inputs.shape[1]]
    shifted_segments = np.pad(segments, [(0, 0), (back, 0)],
                              constant_values=-1)[:, :segments.shape[1]]
    columns.insert(0, np.where(shifted_segments == segments, shifted, -1))
  # [B, T, order] -> [N, order]
  return np.stack(columns, -1)[batch["weights"] > 0].astype(np.int64)


def _pack(ngrams: np.ndarray, vocab_size: int) -> np.ndarray:
  """[N, k] ids -> [N] int64 keys, the first (oldest) id most significant."""
  keys = np.zeros(len(ngrams), np.int64)
  for column in ngrams.T:
    keys = keys * vocab_size + column
  return keys


def _lookup(table: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(index, found) of each key in the sorted `table`."""
  index = np.minimum(np.searchsorted(table, keys), max(len(table) - 1, 0))
  found = table[index] == keys if len(table) else np.zeros(len(keys), bool)
  return index, found


@dataclasses.dataclass
class Counts:
  """Distinct n-grams of orders 1..order with their counts, and, below the top order,
  how many distinct ids precede each (its continuation count)."""
  vocab_size: int
  keys: list  # per order k (index k - 1): sorted int64 keys of the k-grams seen
  counts: list  # their occurrences
  continuations: list  # distinct left extensions (order k + 1 n-grams), None at the top
  starts_with_bos: list  # bool per k-gram: its oldest id is BOS (no left extension)

  @property
  def order(self) -> int:
    return len(self.keys)

  @classmethod
  def fit(cls, windows_: np.ndarray, vocab_size: int, bos_id: int) -> "Counts":
    """Counts of the n-grams ending at each row of `windows_` ([N, order], as `windows`);
    `bos_id` starts every row (an n-gram from it has no left extension)."""
    order = windows_.shape[1]
    if vocab_size ** order >= 2 ** 63:
      raise ValueError(f"order {order} over {vocab_size} ids does not fit 64-bit keys; "
                       f"the highest order here is {int(62 / np.log2(vocab_size))}")
    keys, counts, first = [], [], []
    for k in range(1, order + 1):
      ngrams = windows_[windows_[:, -k] >= 0, -k:]
      unique, count = np.unique(_pack(ngrams, vocab_size), return_counts=True)
      keys.append(unique)
      counts.append(count)
      first.append(unique // vocab_size ** (k - 1) == bos_id if k > 1
                   else np.zeros(len(unique), bool))
    continuations = []
    for k in range(1, order):
      # The (k+1)-grams without their oldest id: one per distinct left extension.
      suffixes, extensions = np.unique(keys[k] % vocab_size ** k, return_counts=True)
      index, found = _lookup(suffixes, keys[k - 1])
      continuations.append(np.where(found, extensions[index], 0))
    continuations.append(None)
    return cls(vocab_size, keys, counts, continuations, first)

  def adjusted(self, k: int, top: int) -> np.ndarray:
    """Counts of the k-grams in a model of order `top`: occurrences at the top order and
    for n-grams starting with BOS, distinct left extensions otherwise."""
    if k == top:
      return self.counts[k - 1]
    return np.where(self.starts_with_bos[k - 1], self.counts[k - 1], self.continuations[k - 1])


def discounts_of(adjusted: np.ndarray, kind: str) -> np.ndarray:
  """(D1, D2, D3+) from the count-of-counts n1..n4 (Chen & Goodman 1998):
  Y = n1 / (n1 + 2 n2), D_r = r - (r + 1) Y n_{r+1} / n_r; plain: all three Y."""
  n = np.array([(adjusted == r).sum() for r in (1, 2, 3, 4)], np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    y = n[0] / (n[0] + 2 * n[1])
    d = (np.full(3, y) if kind == "plain" else
         np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]]))
  if not (np.isfinite(d).all() and (d > 0).all() and (d <= np.arange(1, 4)).all()):
    logging.warning("Kneser-Ney discounts %s are undefined or out of range: too few n-grams "
                    "counted 1..4 times (%s); using %s.", d, n, FALLBACK_DISCOUNTS)
    d = np.array(FALLBACK_DISCOUNTS[:1] * 3 if kind == "plain" else FALLBACK_DISCOUNTS)
  return d


@dataclasses.dataclass
class _Level:
  """One order's tables: each n-gram's discounted count, and per context its total count
  and the mass its discounts free for the order below."""
  keys: np.ndarray
  numerators: np.ndarray
  contexts: np.ndarray
  totals: np.ndarray
  backoff_mass: np.ndarray


class KneserNey:
  """An interpolated Kneser-Ney model of `order` over ids [0, vocab_size)."""

  def __init__(self, counts: Counts, order: int, discounts: str = "modified",
               fixed_discounts: dict | None = None):
    """`fixed_discounts` ({order: (D1, D2, D3+)}) replaces the estimated ones (for tests)."""
    if not 1 <= order <= counts.order:
      raise ValueError(f"order {order} is not in 1..{counts.order}, the orders counted")
    if discounts not in DISCOUNTS:
      raise ValueError(f"discounts={discounts!r} is not one of {DISCOUNTS}")
    self.order, self.vocab_size = order, counts.vocab_size
    self.discounts, self.levels = {}, []
    for k in range(1, order + 1):
      adjusted = counts.adjusted(k, top=order)
      d = np.asarray((fixed_discounts or {}).get(k, discounts_of(adjusted, discounts)),
                     np.float64)
      self.discounts[k] = tuple(float(x) for x in d)
      subtracted = np.where(adjusted > 0, d[np.clip(adjusted, 1, 3) - 1], 0.0)
      # Keys are sorted, so each context's n-grams are one run.
      contexts, first = np.unique(counts.keys[k - 1] // self.vocab_size, return_index=True)
      self.levels.append(_Level(
          keys=counts.keys[k - 1], numerators=adjusted - subtracted, contexts=contexts,
          totals=np.add.reduceat(adjusted, first).astype(np.float64),
          backoff_mass=np.add.reduceat(subtracted, first)))

  def probabilities(self, windows_: np.ndarray) -> np.ndarray:
    """p(target | history) of each row of `windows_` ([N, >= order], as `windows`)."""
    windows_ = windows_[:, -self.order:]
    p = np.full(len(windows_), 1.0 / self.vocab_size)
    for k, level in enumerate(self.levels, start=1):
      rows = windows_[:, -k] >= 0
      keys = _pack(windows_[rows, -k:], self.vocab_size)
      lower = p[rows]
      context, seen_context = _lookup(level.contexts, keys // self.vocab_size)
      entry, seen = _lookup(level.keys, keys)
      numerator = np.where(seen, level.numerators[entry], 0.0)
      # An unseen context passes the order below through unchanged.
      total = np.where(seen_context, level.totals[context], 1.0)
      mass = np.where(seen_context, level.backoff_mass[context], 1.0)
      p[rows] = (numerator + mass * lower) / total
    return p

  def distribution(self, history) -> np.ndarray:
    """p(id | history) for every id [V]; `history` is the ids before (oldest first, BOS at
    a segment start)."""
    history = list(history)[-(self.order - 1):] if self.order > 1 else []
    pad = [-1] * (self.order - 1 - len(history))
    rows = np.array([pad + history + [w] for w in range(self.vocab_size)], np.int64)
    return self.probabilities(rows)


def bits_per_byte(model: KneserNey, batches) -> float:
  """Bits per byte of the weighted targets of `batches`, as the models' eval scores them."""
  bits = nbytes = 0.0
  for batch in batches:
    weights = batch["weights"][batch["weights"] > 0]
    bits -= float((np.log2(model.probabilities(windows(batch, model.order))) * weights).sum())
    nbytes += float(batch["target_bytes"].sum())
  return bits / max(nbytes, 1.0)


def fit(batches, vocab_size: int, order: int, bos_id: int) -> Counts:
  """Counts of orders 1..`order` over the scored targets of `batches` (rows as the models
  train on); `KneserNey(counts, k)` is then the model of any order k <= `order`."""
  return Counts.fit(np.concatenate([windows(b, order) for b in batches]), vocab_size, bos_id)
