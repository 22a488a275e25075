"""Unigram baseline: token frequencies of the train split, add-one smoothed."""
from jax.experimental import multihost_utils
import numpy as np

from train.tokenizer import Tokenizer


def fit(texts, tokenizer: Tokenizer) -> np.ndarray:
  """log2 probability of each id [V], counted over the documents' tokens and EOS."""
  return fit_ids((tokenizer.encode(text) for text in texts), tokenizer.vocab_size,
                 tokenizer.eos_id)


def fit_ids(sequences, vocab_size: int, eos_id: int) -> np.ndarray:
  """log2 probability of each id [V], counted over the id sequences and an EOS after each."""
  counts = np.ones(vocab_size, np.float64)
  for ids in sequences:
    counts += np.bincount(ids, minlength=vocab_size)
    counts[eos_id] += 1
  return np.log2(counts / counts.sum())


def bits_per_byte(log2_probs: np.ndarray, batches) -> float:
  """Bits per byte of the weighted targets of `batches`, as the model's eval scores them,
  over every host's batches (each host passes its own; all must call this). Across hosts
  the two sums travel as float32: 1e-7 relative, for a baseline read to 3 decimals."""
  bits = nbytes = 0.0
  for batch in batches:
    bits -= float((log2_probs[batch["targets"]] * batch["weights"]).sum())
    nbytes += float(batch["target_bytes"].sum())
  bits, nbytes = multihost_utils.process_allgather(np.array([bits, nbytes])).sum(0)
  return float(bits / max(nbytes, 1.0))
