"""tools/tokenizer.py: encode/decode round trip, the special ids, one-line errors."""
import os
import subprocess
import sys

from tests.conftest import TEST_VOCAB, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "def f(x):\n\treturn  x  # naïve 🙂 <extra_id_3>"


def _tool(text_dir, data_dir, *args):
  """Runs the tool on the test corpus; returns the finished process."""
  data = tiny_config(text_dir, data_dir).data
  flags = ["--config=configs/gpt_tiny.py"] + [
      f"--config.data.{k}={data[k]}"
      for k in ("source", "data_dir", "validation_percent", "vocab_size", "tokenizer_sentences")]
  return subprocess.run([sys.executable, "-m", "tools.tokenizer", *flags, *args],
                        capture_output=True, text=True, cwd=ROOT)


def test_encode_then_decode_round_trips(built, text_dir, data_dir):
  encoded = _tool(text_dir, data_dir, "encode", TEXT)
  assert encoded.returncode == 0, encoded.stderr[-2000:]
  pieces, ids, counts = encoded.stdout.splitlines()
  assert pieces.startswith("pieces: [") and pieces.endswith("'<extra_id_3>']")
  ids = ids.split()[1:]
  assert ids[-1] == str(TEST_VOCAB - 1 - 3)  # sentinels count down from the top
  num_bytes = len(TEXT.encode("utf-8"))
  assert counts == f"{len(ids)} tokens, {num_bytes} bytes: {num_bytes / len(ids):.2f} bytes/token"
  decoded = _tool(text_dir, data_dir, "decode", *ids)
  assert decoded.returncode == 0, decoded.stderr[-2000:]
  assert decoded.stdout == TEXT + "\n"


def test_info_prints_the_special_ids_and_the_model_path(built, text_dir, data_dir):
  result = _tool(text_dir, data_dir, "info")
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  path = lines[0].removeprefix("tokenizer: ")
  assert os.path.isfile(path) and path.startswith(data_dir)
  assert lines[1] == f"vocab size: {TEST_VOCAB} ({TEST_VOCAB - 100} pieces + 100 sentinels)"
  assert lines[2:] == ["pad: 0 <pad>", "eos: 1 </s>", "bos: 3 <s>",
                       "mask: 4 <mask>", f"first sentinel: {TEST_VOCAB - 1} <extra_id_0>",
                       f"last sentinel: {TEST_VOCAB - 100} <extra_id_99>"]


def test_bad_input_fails_in_one_line(built, text_dir, data_dir, tmp_path):
  cases = {("decode", "12", "x"): "error: decode takes integer ids, got '12 x'",
           ("decode", str(TEST_VOCAB)): f"error: ids [{TEST_VOCAB}] are outside the vocabulary",
           ("frobnicate",): "error: bad command 'frobnicate'; commands: encode",
           (): "error: no command; commands:",
           ("--config.data.no_such_field=1", "info"): "error: bad flag",
           (f"--config.data.source={tmp_path}/missing/*.txt", "info"): "error: config.data.source="}
  for args, message in cases.items():
    result = _tool(text_dir, data_dir, *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-500:]
