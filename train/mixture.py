"""Weighted mixtures of document sources (`config.data.mixture`).

Training reads an endless stream: each part shuffled by the seed and repeated, then
interleaved by grain's `MapDataset.mix` in the proportions of the weights. Example i of
the stream is a pure function of (seed, i), so a resumed run reads exactly what it would
have read, and each source's share of any long stretch is its weight's. Validation mixes
the parts' finite validation splits the same way, until the part that runs out first (for
its weight) ends.
"""
import hashlib
import json

from absl import logging
import grain
import ml_collections
import numpy as np

SHARE_WINDOW = 10_000  # examples over which the realised shares are logged


def parse(mixture) -> list[tuple[str, float]]:
  """[(source, weight), ...] of `config.data.mixture`; one-line errors for bad weights."""
  pairs = []
  for item in mixture:
    if len(item) != 2 or not isinstance(item[0], str):
      raise ValueError(f"config.data.mixture entry {item!r} must be (source, weight), e.g. "
                       "(('jsonl:a/*.jsonl', 0.7), ('tfds:wiki40b/en', 0.3))")
    try:
      weight = float(item[1])
    except (TypeError, ValueError):
      raise ValueError(f"config.data.mixture: weight {item[1]!r} of {item[0]!r} is not a "
                       "number") from None
    if not weight >= 0 or weight == float("inf"):  # also catches NaN
      raise ValueError(f"config.data.mixture: weight {item[1]!r} of {item[0]!r} must be a "
                       "finite number >= 0")
    pairs.append((item[0], weight))
  if not pairs or not sum(w for _, w in pairs) > 0:
    raise ValueError(f"config.data.mixture={tuple(mixture)!r}: the weights are all zero; give "
                     "at least one source a positive weight")
  return pairs


def selection(weights: list[float], count: int) -> np.ndarray:
  """[count] the part each of the stream's first `count` examples comes from."""
  tags = [grain.MapDataset.range(1).map(lambda _, k=k: k).repeat() for k in range(len(weights))]
  mixed = grain.MapDataset.mix(tags, weights)
  return np.fromiter((mixed[i] for i in range(count)), np.int64, count)


class MixedDocuments:
  """One split of a mixture: random access over the parts' finite splits (validation,
  the tokenizer's sample), and `stream(seed)` for training."""

  def __init__(self, parts, weights: list[float], names: list[str]):
    self.parts, self.weights, self.names = parts, weights, names
    self._finite = grain.MapDataset.mix([grain.MapDataset.source(p) for p in parts], weights)

  def __len__(self) -> int:
    return len(self._finite)

  def __getitem__(self, index: int) -> dict:
    return self._finite[index]

  def stream(self, seed: int) -> grain.MapDataset:
    """The endless training stream; logs each source's realised share of its start."""
    shares = np.bincount(selection(self.weights, SHARE_WINDOW), minlength=len(self.parts))
    for name, weight, share in zip(self.names, self.weights, shares / SHARE_WINDOW):
      logging.info("mixture: %s weight %.4f, realised share %.4f of the first %d examples",
                   name, weight / sum(self.weights), share, SHARE_WINDOW)
    # Each part its own shuffle seed, so two parts of the same size do not move in step.
    return grain.MapDataset.mix(
        [grain.MapDataset.source(part).shuffle(seed=seed + k).repeat()
         for k, part in enumerate(self.parts)], self.weights)


class Mixture:
  """Several sources with weights, read as one (train/sources.py's DocumentSource)."""

  def __init__(self, parts: list, weights: list[float], names: list[str]):
    self.parts, self.weights, self.names = parts, weights, names
    listing = json.dumps([[p.cache_key, w] for p, w in zip(self.parts, self.weights)])
    self.cache_key = "mix_" + hashlib.sha256(listing.encode("utf-8")).hexdigest()[:12]

  @classmethod
  def from_config(cls, data: ml_collections.ConfigDict, resolve_one) -> "Mixture":
    # A zero weight keeps a source out of the run without deleting its line.
    pairs = [(spec, w) for spec, w in parse(data.mixture) if w > 0]
    return cls([resolve_one(spec, data) for spec, _ in pairs], [w for _, w in pairs],
               [spec for spec, _ in pairs])

  def prepare(self, data_dir: str) -> None:
    for part in self.parts:
      part.prepare(data_dir)

  def split(self, name: str) -> MixedDocuments:
    return MixedDocuments([part.split(name) for part in self.parts], self.weights, self.names)

  def fingerprint(self) -> dict:
    return {"mixture": [{"weight": w, "source": p.fingerprint()}
                        for p, w in zip(self.parts, self.weights)]}
