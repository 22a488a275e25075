"""Command line: look at the tokenizer an experiment config trains with.

  python -m tools.tokenizer --config=configs/gpt_tiny.py encode "def f(x):"
  python -m tools.tokenizer --config=configs/gpt_tiny.py decode 300 301 302
  python -m tools.tokenizer --config=configs/gpt_tiny.py info

It is the tokenizer train/main.py uses for the same `--config.data.*` fields,
loaded from its cache next to the corpus, or built there (corpus first) if missing.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from train import cli, tokenizer
from train import data as data_lib

USAGE = "commands: encode TEXT | decode ID [ID ...] | info"


def encode(tok: tokenizer.Tokenizer, text: str) -> list[str]:
  """Pieces, ids and bytes per token of `text`."""
  ids = [int(i) for i in tok.encode(text)]
  num_bytes = len(text.encode("utf-8"))
  ratio = f": {num_bytes / len(ids):.2f} bytes/token" if ids else ""
  return [f"pieces: {[tok.id_to_piece(i) for i in ids]}",
          " ".join(["ids:", *map(str, ids)]),
          f"{len(ids)} tokens, {num_bytes} bytes{ratio}"]


def decode(tok: tokenizer.Tokenizer, args: list[str]) -> list[str]:
  """The text of the ids in `args` (up to the first EOS, as in training)."""
  try:
    ids = [int(a) for a in args]
  except ValueError:
    raise ValueError(f"decode takes integer ids, got {' '.join(args)!r}") from None
  bad = [i for i in ids if not 0 <= i < tok.vocab_size]
  if bad:
    raise ValueError(f"ids {bad} are outside the vocabulary [0, {tok.vocab_size})")
  return [tok.decode(ids)]


def info(tok: tokenizer.Tokenizer, path: str) -> list[str]:
  """Model path, vocabulary size and the special ids with their pieces."""
  specials = [("pad", tok.pad_id), ("eos", tok.eos_id), ("bos", tok.bos_id),
              ("mask", tok.mask_id)]
  if tok.num_sentinels:
    specials += [("first sentinel", tok.sentinel_id(0)),
                 ("last sentinel", tok.sentinel_id(tok.num_sentinels - 1))]
  return ([f"tokenizer: {path}",
           f"vocab size: {tok.vocab_size} ({tok.vocab_size - tok.num_sentinels} pieces + "
           f"{tok.num_sentinels} sentinels)"]
          + [f"{name}: {i} {tok.id_to_piece(i)}" if i is not None else f"{name}: none"
             for name, i in specials])


def run(config, argv: list[str]) -> list[str]:
  """The output lines of one command (`argv` = [command, *args])."""
  command, args = (argv[0], argv[1:]) if argv else (None, [])
  arity = {"encode": len(args) == 1, "decode": len(args) >= 1, "info": not args}
  if not arity.get(command, False):
    given = f"bad command {' '.join(argv)!r}" if argv else "no command"
    raise ValueError(f"{given}; {USAGE}")
  loaded = data_lib.load(config)
  tok, path = loaded.tokenizer, loaded.tokenizer_path
  if command == "encode":
    return encode(tok, args[0])
  return decode(tok, args) if command == "decode" else info(tok, path)


def main(argv, config_flag):
  try:
    lines = run(config_flag.value, argv[1:])
  except ValueError as e:  # bad command, config or data: one line, as train/main.py
    sys.exit(f"error: {e}")
  print("\n".join(lines))


if __name__ == "__main__":
  # Defined here, not at import, so importing this module never clashes with
  # train/main.py's own --config.
  _config = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                            lock_config=True)
  flags.mark_flag_as_required("config")
  app.run(lambda argv: main(argv, _config), flags_parser=cli.parse_flags)
