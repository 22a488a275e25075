"""Command line: generate from a trained or converted model, or show its next-token table.

  python -m tools.generate --config=configs/gpt_tiny.py --workdir=/tmp/triform/gpt_tiny \
      --prompt="def read_file(path):" [--max_new_tokens=64 --temperature=0.8 --top_p=0.9]
  python -m tools.generate --config=... --workdir=... --prompt="import os" --show_next_token_probs
  python -m tools.generate --triform_dir=/tmp/gpt2_converted --prompt="The quick brown"

A decoder continues each prompt; an encoder-decoder maps each prompt to an output;
an encoder fills every <mask> in the prompt with its top candidates. With
--workdir the run's tokenizer is used and the latest checkpoint is loaded; a
directory made by tools/convert_hf.py uses the checkpoint's own tokenizer (copied
into it), or, when the checkpoint had none, takes and prints token ids.
"""
import os
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from model import FAMILIES, decoding, model_config, model_graphdef
from tools import convert_hf
from train import cli, hf_tokenizer, pretrained, tokenizer
from train import data as data_lib
from train.experiment import Experiment

FLAGS = flags.FLAGS


def _define_flags():
  from ml_collections import config_flags
  config = config_flags.DEFINE_config_file("config", None, "Config of the --workdir run.",
                                           lock_config=True)
  flags.DEFINE_string("workdir", None, "A training run: its latest checkpoint is loaded.")
  flags.DEFINE_string("triform_dir", None, "Or a directory written by tools/convert_hf.py.")
  flags.DEFINE_multi_string("prompt", [], "Prompt text (repeatable).")
  flags.DEFINE_string("prompt_file", None, "A file of prompts, one per line.")
  flags.DEFINE_multi_string("prompt_ids", [], "A prompt as space-separated token ids.")
  flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate per prompt.")
  flags.DEFINE_float("temperature", 0.0, "0: greedy; else sample at this temperature.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0: all).")
  flags.DEFINE_float("top_p", 1.0, "Sample from the nucleus of this probability mass.")
  flags.DEFINE_integer("beam_size", 0, "Beam search with this many beams (0: off).")
  flags.DEFINE_float("length_penalty", 0.6, "Beam search's GNMT length penalty alpha.")
  flags.DEFINE_integer("no_repeat_ngram", 0, "n: never write an n-gram twice (0: off; "
                       "greedy and sampling).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_bool("show_next_token_probs", False, "Print the next-token table instead.")
  flags.DEFINE_integer("top", 10, "Rows of the next-token table, or candidates per mask.")
  return config


def load(config, workdir, triform_dir):
  """(model config, graphdef, params, tokenizer or None)."""
  if bool(workdir) == bool(triform_dir):
    raise ValueError("give exactly one of --workdir (with --config) or --triform_dir")
  if triform_dir:
    config, params = pretrained.load_params(triform_dir)
    cfg = model_config(config)
    tokenizer_dir = os.path.join(triform_dir, convert_hf.TOKENIZER_DIR)
    tok = (hf_tokenizer.published(tokenizer_dir, config.data.vocab_size)
           if os.path.isdir(tokenizer_dir) else None)
    return cfg, model_graphdef(cfg), params, tok
  if config is None:
    raise ValueError("--workdir needs --config, the run's config file and overrides")
  experiment = Experiment(config)
  params = experiment.restore(workdir).params
  return experiment.model_cfg, experiment.graphdef, params, data_lib.load(config).tokenizer


def encode_prompts(cfg, tok, texts, id_strings) -> list[np.ndarray]:
  """Token ids of each prompt, framed as in training: BOS before a decoder's text,
  EOS after an encoder-decoder's source."""
  prompts = [np.array([int(i) for i in s.split()], np.int32) for s in id_strings]
  if texts and tok is None:
    raise ValueError("a --triform_dir has no tokenizer: give --prompt_ids")
  generation = FAMILIES[cfg.family].GENERATION
  for text in texts:
    ids = tok.encode(text)
    if generation == "continuation":
      ids = np.concatenate([[tok.bos_id], ids])
    elif generation == "text_to_text":
      ids = np.concatenate([ids, [tok.eos_id]])
    prompts.append(ids.astype(np.int32))
  if not prompts:
    raise ValueError("no prompt: give --prompt, --prompt_file or --prompt_ids")
  if any(len(p) == 0 for p in prompts):
    raise ValueError("an empty prompt: give at least one token")
  return prompts


def batch(prompts: list[np.ndarray]) -> tuple[jax.Array, jax.Array]:
  """Right-padded [B, P] ids and their lengths [B]."""
  width = max(len(p) for p in prompts)
  padded = np.stack([np.pad(p, (0, width - len(p))) for p in prompts])
  return jnp.asarray(padded), jnp.asarray([len(p) for p in prompts])


def _piece(tok, i: int) -> str:
  return str(i) if tok is None else repr(tok.decode([i]))


def next_token_table(cfg, graphdef, params, tok, prompt: np.ndarray, top: int) -> list[str]:
  """Markdown rows: the `top` most likely next tokens after `prompt` and their probabilities."""
  inputs, lengths = batch([prompt])
  _, logits = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(0),
                                max_new_tokens=1, return_logits=True, **_special_ids(tok))
  probs = np.asarray(jax.nn.softmax(logits[0, 0]))
  order = np.argsort(-probs)[:top]
  rows = ["| rank | id | token | probability |", "|---|---|---|---|"]
  rows += [f"| {r + 1} | {i} | {_piece(tok, int(i))} | {probs[i]:.4f} |"
           for r, i in enumerate(order)]
  return rows


def run(cfg, graphdef, params, tok, prompts) -> list[str]:
  """Output lines for every prompt."""
  lines = []
  generation = FAMILIES[cfg.family].GENERATION
  if generation not in ("continuation", "text_to_text", "mask_filling"):
    raise ValueError(f"a {cfg.family} model does not generate: use a decoder, an "
                     "encoder-decoder or an encoder")
  if FLAGS.show_next_token_probs:
    if generation == "mask_filling":
      raise ValueError("--show_next_token_probs is for decoders and encoder-decoders")
    for prompt in prompts:
      lines += [f"prompt: {_text(tok, prompt)}"] + next_token_table(
          cfg, graphdef, params, tok, prompt, FLAGS.top)
    return lines
  inputs, lengths = batch(prompts)
  if generation == "mask_filling":
    ids, probs = decoding.fill_masks(graphdef, params, inputs, lengths, top_k=FLAGS.top)
    for b, prompt in enumerate(prompts):
      lines.append(f"prompt: {_text(tok, prompt)}")
      for t in np.flatnonzero(prompt == (tok.mask_id if tok else tokenizer.Specials.trained(
          cfg.vocab_size).mask_id)):
        options = ", ".join(f"{_piece(tok, int(i))} {p:.3f}" for i, p in zip(ids[b, t], probs[b, t]))
        lines.append(f"  mask at {t}: {options}")
    return lines
  if FLAGS.beam_size:
    out, _ = decoding.beam_search(graphdef, params, inputs, lengths,
                                  max_new_tokens=FLAGS.max_new_tokens, beam_size=FLAGS.beam_size,
                                  alpha=FLAGS.length_penalty, **_special_ids(tok))
  else:
    out = decoding.generate(graphdef, params, inputs, lengths, jax.random.key(FLAGS.seed),
                            max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                            top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                            no_repeat_ngram=FLAGS.no_repeat_ngram, **_special_ids(tok))
  for prompt, new in zip(prompts, np.asarray(out)):
    lines += [f"prompt: {_text(tok, prompt)}", f"output: {_text(tok, new)}"]
  return lines


def _special_ids(tok) -> dict:
  """The eos and pad ids decoding stops and pads with: the tokenizer's, when there is one."""
  return {} if tok is None else {"eos_id": tok.eos_id, "pad_id": tok.pad_id}


def _text(tok, ids) -> str:
  if tok is None:
    return " ".join(str(int(i)) for i in ids if i != decoding.PAD_ID)
  return tok.decode([i for i in ids if i != tok.bos_id])


def main(argv, config_flag):
  del argv
  try:
    if FLAGS.beam_size and FLAGS.no_repeat_ngram:
      raise ValueError("--no_repeat_ngram applies to greedy decoding and sampling, not to "
                       "--beam_size; drop one of them")
    cfg, graphdef, params, tok = load(config_flag.value, FLAGS.workdir, FLAGS.triform_dir)
    texts = list(FLAGS.prompt)
    if FLAGS.prompt_file:
      with open(FLAGS.prompt_file, encoding="utf-8") as f:
        texts += [line.rstrip("\n") for line in f if line.strip()]
    if (FAMILIES[cfg.family].GENERATION == "mask_filling" and tok is not None
        and not any("<mask>" in t for t in texts)):
      raise ValueError("an encoder fills masks: put <mask> in the prompt")
    print("\n".join(run(cfg, graphdef, params, tok, encode_prompts(cfg, tok, texts,
                                                                   FLAGS.prompt_ids))))
  except ValueError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _config = _define_flags()
  app.run(lambda argv: main(argv, _config), flags_parser=cli.parse_flags)
