"""Command line: pictures of what a trained model learned, written as PNGs.

  python -m tools.inspect --workdir=/tmp/triform/gpt_tiny --text="def read(path):" --out=/tmp/pics
  python -m tools.inspect --triform_dir=/tmp/gpt2_converted --text="The quick brown fox"

For each attention of each stack (self-attention; an encoder-decoder's cross-attention
too) `attention_<stack>_<kind>.png` shows every layer (rows) and head (columns) as a
heatmap of the weights each token of --text (queries, down) gives the tokens it reads
(keys, across). `embeddings.png` projects the token embedding table on its first two
principal components and labels the tokens of --text and those of --label. A workdir's
config is read from its config.json; its latest checkpoint is used.
"""
import dataclasses
import os
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model import FAMILIES, build_model, decoding
from model.attention import Attention
from model.stack import unstack_layers
from tools import generate, hf_params
from train import cli, pretrained

FLAGS = flags.FLAGS
# Beyond this many tokens a heatmap's axes are not labelled token by token.
MAX_LABELLED_TOKENS = 48


def _define_flags():
  flags.DEFINE_string("workdir", None, "A training run: its config.json and latest checkpoint.")
  flags.DEFINE_string("triform_dir", None, "Or a directory written by tools/convert_hf.py.")
  flags.DEFINE_string("text", "def read_file(path):\n    with open(path) as f:\n",
                      "The input whose attention is drawn (an encoder-decoder's encoder input).")
  flags.DEFINE_string("target", None, "Encoder-decoder: the decoder's text (default: the model's "
                      "own greedy output for --text).")
  flags.DEFINE_multi_string("label", [], "More words to label in embeddings.png (repeatable).")
  flags.DEFINE_string("out", None, "Directory for the PNGs (default: WORKDIR/inspect).")


def load(workdir: str | None, triform_dir: str | None):
  """(model config, model with every layer unrolled, tokenizer or None)."""
  config = pretrained.load_config(workdir) if workdir else None
  cfg, _, params, tok = generate.load(config, workdir, triform_dir)
  if not FAMILIES[cfg.family].USES_ATTENTION:
    raise ValueError(f"a {cfg.family} model has no attention to draw")
  return (*unrolled(cfg, nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params),
          tok)


def unrolled(cfg, params: dict):
  """(config, model) of `params` with scanned stacks unrolled: weights are sown layer by
  layer. The numbers are the same."""
  if cfg.scan_layers:
    params = hf_params.map_layers(params, unstack_layers)
    cfg = dataclasses.replace(cfg, scan_layers=False)
  model = nnx.eval_shape(lambda: build_model(cfg, 0))
  nnx.update(model, nnx.State(params))
  return cfg, model


@dataclasses.dataclass
class Reading:
  """A model's reading of one input: attention weights by (stack, kind) -> [L, N, T, S],
  and the token labels of the queries and keys of each."""
  weights: dict
  query_tokens: dict
  key_tokens: dict


def _row(ids) -> dict:
  """One unpadded row: ids, positions and segment ids [1, T]."""
  ids = jnp.asarray(ids, jnp.int32)[None]
  return {"ids": ids, "positions": jnp.arange(ids.shape[1])[None], "segments": jnp.ones_like(ids)}


def _greedy_target(model, tok, source: np.ndarray, max_new_tokens: int = 24) -> np.ndarray:
  """An encoder-decoder's greedy output for `source`, up to (without) its EOS."""
  graphdef, params = nnx.split(model)
  out = np.asarray(decoding.generate(
      graphdef, params, jnp.asarray(source)[None], jnp.asarray([len(source)]), jax.random.key(0),
      max_new_tokens=max_new_tokens, eos_id=tok.eos_id, pad_id=tok.pad_id))[0]
  return out[:np.argmax(out == tok.eos_id)] if (out == tok.eos_id).any() else out


def read(cfg, model, tok, text: str, target: str | None = None) -> Reading:
  """The attention weights of `model` over `text`, framed as the family trains: a decoder
  reads BOS then the text; an encoder the text; an encoder-decoder encodes the text and EOS,
  and its decoder reads its start token then `target` (default: its own greedy output)."""
  ids = np.asarray(tok.encode(text), np.int32)
  if not len(ids):
    raise ValueError("--text is empty: give at least one token")
  pieces = lambda ids: [tok.decode([int(i)]) or tok.id_to_piece(int(i)) for i in ids]
  generation = FAMILIES[cfg.family].GENERATION
  for module in _attentions(model).values():
    module.record_weights = True
  if generation == "text_to_text":
    source = np.concatenate([ids, [tok.eos_id]])
    out = np.asarray(tok.encode(target), np.int32) if target else _greedy_target(model, tok, source)
    decoder_ids = np.concatenate([[tok.pad_id], out])
    enc, dec = _row(source), _row(decoder_ids)
    model.hidden(enc["ids"], enc["positions"], enc["segments"], dec["ids"], dec["positions"],
                 dec["segments"])
    source_tokens = pieces(ids) + ["</s>"]
    decoder_tokens = ["<start>"] + pieces(out)
    queries = {"encoder": source_tokens, "decoder": decoder_tokens}
    keys = {("encoder", "self"): source_tokens, ("decoder", "self"): decoder_tokens,
            ("decoder", "cross"): source_tokens}
  else:
    row_ids = np.concatenate([[tok.bos_id], ids]) if generation == "continuation" else ids
    row = _row(row_ids)
    model.hidden(row["ids"], row["positions"], row["segments"])
    tokens = (["<s>"] if generation == "continuation" else []) + pieces(ids)
    queries = {cfg.family: tokens}
    keys = {(cfg.family, "self"): tokens}
  weights = {}
  for (stack, kind, layer), module in sorted(_attentions(model).items()):
    module.record_weights = False
    # [1, N, T, S] -> [N, T, S]
    weights.setdefault((stack, kind), []).append(np.asarray(module.weights.get_value()[0][0]))
  nnx.pop(model, nnx.Intermediate)
  return Reading(weights={k: np.stack(v) for k, v in weights.items()},
                 query_tokens={k: queries[k[0]] for k in weights}, key_tokens=keys)


def _attentions(model) -> dict:
  """{(stack name, "self" or "cross", layer): Attention} of an unrolled model."""
  found = {}
  for path, module in nnx.iter_modules(model):
    if isinstance(module, Attention):
      stack = path[0] if path[0] in ("encoder", "decoder") else type(model).__name__.lower()
      found[(stack, path[-1].removesuffix("_attn"), path[-2])] = module
  return found


def head_summary(weights: np.ndarray) -> list[dict]:
  """Where each head of a self-attention looks, from weights [L, N, T, T]: the mean weight on
  the previous token, on itself and on the first token of the row, and the mean distance
  |t - s| under the weights. One dict per (layer, head)."""
  layers, heads, t, _ = weights.shape
  distance = np.abs(np.arange(t)[:, None] - np.arange(t)[None, :])
  rows = []
  for layer, head in np.ndindex(layers, heads):
    w = weights[layer, head]
    rows.append({"layer": layer, "head": head,
                 "previous": float(np.diagonal(w, -1).mean()) if t > 1 else 0.0,
                 "self": float(np.diagonal(w).mean()), "first": float(w[:, 0].mean()),
                 "distance": float((w * distance).sum(-1).mean())})
  return rows


def summary_table(rows: list[dict]) -> str:
  """`head_summary` rows as a markdown table."""
  lines = ["| layer | head | on previous | on itself | on first | mean distance |",
           "|---|---|---|---|---|---|"]
  lines += [f"| {r['layer']} | {r['head']} | {r['previous']:.2f} | {r['self']:.2f} | "
            f"{r['first']:.2f} | {r['distance']:.1f} |" for r in rows]
  return "\n".join(lines)


def shown(piece: str) -> str:
  """A token as a label: escapes visible (\\n) and spaces as middle dots."""
  return repr(piece)[1:-1].replace(" ", "\u00b7")


def plot_attention(weights: np.ndarray, query_tokens: list, key_tokens: list, title: str):
  """A figure of weights [L, N, T, S]: one heatmap per layer (row) and head (column)."""
  import matplotlib.pyplot as plt
  layers, heads, t, s = weights.shape
  size = 1.2 + 0.13 * max(t, s, 12)
  fig, axes = plt.subplots(layers, heads, figsize=(size * heads, size * layers), squeeze=False)
  for (layer, head), ax in np.ndenumerate(np.empty((layers, heads), object)):
    ax = axes[layer, head]
    ax.imshow(weights[layer, head], cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"layer {layer}, head {head}", fontsize=8)
    labelled = max(t, s) <= MAX_LABELLED_TOKENS
    ax.set_xticks(range(s) if labelled else [])
    ax.set_yticks(range(t) if labelled else [])
    if labelled:
      ax.set_xticklabels(map(shown, key_tokens), rotation=90, fontsize=6)
      ax.set_yticklabels(map(shown, query_tokens), fontsize=6)
  fig.suptitle(f"{title}: rows read (queries, down) the tokens across (keys)")
  fig.tight_layout()
  return fig


def embedding_projection(table: np.ndarray) -> np.ndarray:
  """Each row of table [V, D] on the table's first two principal components: [V, 2]."""
  centred = table - table.mean(0)
  # Right singular vectors of the centred table are its principal axes.
  _, _, axes = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
  return centred @ axes[:2].T


def plot_embeddings(table: np.ndarray, labels: dict, title: str):
  """A figure of table [V, D] projected to 2-D; `labels` {id: text} are marked and named."""
  import matplotlib.pyplot as plt
  points = embedding_projection(np.asarray(table, np.float32))
  fig, ax = plt.subplots(figsize=(8, 8))
  ax.scatter(points[:, 0], points[:, 1], s=3, color="0.75", label="every token")
  ids = sorted(labels)
  ax.scatter(points[ids, 0], points[ids, 1], s=12, color="tab:red", label="labelled")
  for i in ids:
    ax.annotate(shown(labels[i]), points[i], fontsize=7, xytext=(2, 2),
                textcoords="offset points")
  ax.set_xlabel("principal component 1")
  ax.set_ylabel("principal component 2")
  ax.set_title(title)
  ax.legend(loc="best")
  return fig


def embedding_labels(tok, text: str, words=()) -> dict:
  """{id: piece} of the distinct tokens of `text` and of `words`."""
  ids = list(tok.encode(text)) + [i for w in words for i in tok.encode(w)]
  return {int(i): tok.decode([int(i)]) or tok.id_to_piece(int(i)) for i in ids}


def write_pictures(cfg, model, tok, text: str, out_dir: str, target: str | None = None,
                   words=()) -> list[str]:
  """Writes the attention and embedding PNGs of `model` for `text`; returns their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(out_dir, exist_ok=True)
  reading, paths = read(cfg, model, tok, text, target), []
  for (stack, kind), weights in reading.weights.items():
    fig = plot_attention(weights, reading.query_tokens[(stack, kind)],
                         reading.key_tokens[(stack, kind)], f"{stack} {kind}-attention")
    paths.append(os.path.join(out_dir, f"attention_{stack}_{kind}.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  fig = plot_embeddings(model.embed.table[...], embedding_labels(tok, text, words),
                        f"token embeddings of a {cfg.family} ({cfg.vocab_size} tokens)")
  paths.append(os.path.join(out_dir, "embeddings.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  return paths


def main(argv):
  del argv
  try:
    cfg, model, tok = load(FLAGS.workdir, FLAGS.triform_dir)
    if tok is None:
      raise ValueError(f"{FLAGS.triform_dir} has no tokenizer to read --text with")
    out = FLAGS.out or os.path.join(FLAGS.workdir or FLAGS.triform_dir, "inspect")
    for path in write_pictures(cfg, model, tok, FLAGS.text, out, FLAGS.target, FLAGS.label):
      print(path)
    for (stack, kind), weights in read(cfg, model, tok, FLAGS.text, FLAGS.target).weights.items():
      if kind == "self":
        print(f"\n{stack} self-attention over --text:\n" + summary_table(head_summary(weights)))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
