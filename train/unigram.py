"""Unigram baseline: token frequencies of the train split, add-one smoothed."""
import numpy as np

from train.tokenizer import EOS_ID, Tokenizer


def fit(texts, tokenizer: Tokenizer) -> np.ndarray:
  """log2 probability of each id [V], counted over the documents' tokens and EOS."""
  counts = np.ones(tokenizer.vocab_size, np.float64)
  for text in texts:
    counts += np.bincount(tokenizer.encode(text), minlength=tokenizer.vocab_size)
    counts[EOS_ID] += 1
  return np.log2(counts / counts.sum())


def bits_per_byte(log2_probs: np.ndarray, batches) -> float:
  """Bits per byte of the weighted targets of `batches`, as the model's eval scores them."""
  bits = nbytes = 0.0
  for batch in batches:
    bits -= float((log2_probs[batch["targets"]] * batch["weights"]).sum())
    nbytes += float(batch["target_bytes"].sum())
  return bits / max(nbytes, 1.0)
