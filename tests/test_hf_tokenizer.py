"""Published tokenizers: HF tokenizer directories built here encode exactly as transformers'
tokenizer does; convert_hf import carries them, and tools.generate reads text with them."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tokenizers
import torch
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

from tools import convert_hf
from train import hf_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTINELS = 100
TEXTS = ["def read(path):\n    return open(path).read()", "  héllo wörld <extra_id_0> x=1",
         "import os, sys  # tabs\tand  spaces"]


def _paragraphs(text_dir, limit):
  """Real text: the first `limit` blank-line separated paragraphs of the test corpus."""
  docs = []
  for name in sorted(os.listdir(text_dir)):
    docs += [p for p in (text_dir / name).read_text().split("\n\n") if p.strip()]
  return docs[:limit]


def _gpt2_tokenizer(texts) -> transformers.PreTrainedTokenizerFast:
  """A byte-level BPE with GPT-2's layout: 256 bytes, merges, <|endoftext|> as bos and eos."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<|endoftext|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                              eos_token="<|endoftext|>")


def _t5_tokenizer(texts) -> transformers.PreTrainedTokenizerFast:
  """A unigram model with T5's layout: pad 0, eos 1, unk 2, pieces, 100 <extra_id_N>."""
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Metaspace()
  tok.train_from_iterator(texts, trainers.UnigramTrainer(
      vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
  extra = [f"<extra_id_{i}>" for i in reversed(range(SENTINELS))]  # <extra_id_0> last, as T5
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
      additional_special_tokens=extra)


def _model(name, vocab):
  torch.manual_seed(0)
  if name == "gpt2":
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=64))
  return transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=vocab, d_model=32, d_kv=16, d_ff=48, num_layers=1, num_heads=2,
      decoder_start_token_id=0))


@pytest.fixture(scope="module")
def converted(text_dir, tmp_path_factory):
  """name -> (HF checkpoint dir with its tokenizer, the converted dir)."""
  texts = _paragraphs(text_dir, 300)
  out = {}
  for name, make in (("gpt2", _gpt2_tokenizer), ("t5", _t5_tokenizer)):
    hf_dir = str(tmp_path_factory.mktemp(f"hf_{name}"))
    tok = make(texts)
    tok.save_pretrained(hf_dir)
    _model(name, len(tok)).save_pretrained(hf_dir, safe_serialization=True)
    out_dir = str(tmp_path_factory.mktemp(f"converted_{name}"))
    convert_hf.import_hf(hf_dir, out_dir)
    out[name] = hf_dir, out_dir
  return out


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_converted_tokenizer_encodes_as_transformers(converted, text_dir, name):
  hf_dir, out_dir = converted[name]
  reference = transformers.AutoTokenizer.from_pretrained(hf_dir)
  ours = hf_tokenizer.published(os.path.join(out_dir, convert_hf.TOKENIZER_DIR), len(reference))
  for text in TEXTS + _paragraphs(text_dir, 20):
    expected = reference(text, add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(ours.encode(text), expected)
  assert (ours.eos_id, ours.pad_id) == (reference.eos_token_id, reference.pad_token_id
                                        if reference.pad_token_id is not None
                                        else reference.eos_token_id)
  if name == "t5":
    assert ours.num_sentinels == SENTINELS
    assert ours.sentinel_id(0) == reference.convert_tokens_to_ids("<extra_id_0>") == len(
        reference) - 1
  ids = ours.encode(TEXTS[0])
  assert ours.decode(list(ids) + [ours.eos_id, 5]) == reference.decode(ids)


def test_vocabulary_mismatch_is_one_line(converted):
  directory = os.path.join(converted["gpt2"][1], convert_hf.TOKENIZER_DIR)
  with pytest.raises(ValueError, match=r"has \d+ ids but config.data.vocab_size=50257"):
    hf_tokenizer.published(directory, 50257)


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_generate_reads_text_with_the_converted_tokenizer(converted, name):
  result = subprocess.run([sys.executable, "-m", "tools.generate",
                           f"--triform_dir={converted[name][1]}", "--prompt=def read(path):",
                           "--max_new_tokens=4"], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "prompt: def read(path):" in result.stdout and "output: " in result.stdout
