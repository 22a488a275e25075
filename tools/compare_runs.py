"""What tools/compare reads from finished runs, and the table it makes of them.

A run is a workdir (local or gs://, read through etils.epath) with the files train.main
writes: config.json, metrics.jsonl and summary.json. Runs whose configs differ only in
`seed` form one row, with the seeds' mean and spread.

Comparability: validation bits per byte is tokenizer-independent, but it means the same
thing only for runs that score the same tokens of the same held-out text: the same
objective (causal LM scores every token from its left context; a masked LM only its
selected 15%, given both sides; span corruption only its noise spans) on the same split
of the same data. Such runs share a `group` letter; numbers from different groups are
never ranked against each other. Downstream task metrics (fine-tuning) compare across all
rows.
"""
import dataclasses
import json
import re
import statistics

from etils import epath
import ml_collections

from model import count_params, model_config
from train import validation

# The fields that, equal, make two runs' validation bits per byte comparable.
COMPARABLE_ON = ("objective", "data.source", "data.validation_percent", "data.seq_len")
# Fields that do not make a run another configuration: where and how often it writes or
# evaluates, its layout, and the seed (runs that differ only there are seeds of one row).
NOT_CONFIGURATION = validation.RESUMABLE_CHANGES | {"seed", "train.eval_every",
                                                    "train.checkpoint_every"}
# What a size sweep varies (tools/compare fits loss against size over runs that differ
# only in these, and in their budget).
SIZE_FIELDS = {"model.num_layers", "model.num_decoder_layers", "model.embed_dim",
               "model.mlp_dim", "model.num_heads", "model.num_kv_heads", "model.head_dim"}
BUDGET_FIELDS = {"train.num_steps"}
SEED_SUFFIX = re.compile(r"-seed\d+$")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


@dataclasses.dataclass
class Run:
  """One workdir's config, evaluation curve and final figures."""
  workdir: str
  label: str
  config: dict  # flattened config.json
  curve: list[dict]  # validation records in step order: step, tokens_seen, flops_seen, ...
  train: list[dict]  # train records
  summary: dict  # summary.json ({} while unfinished)
  downstream: dict = dataclasses.field(default_factory=dict)  # {task metric: value}
  # An n-gram's validation bits per byte, counted over the rows this run trained on.
  ngram_bits_per_byte: float | None = None

  @property
  def key(self) -> tuple:
    """What the run is, seeds aside."""
    return tuple(sorted((k, json.dumps(v)) for k, v in self.config.items()
                        if k not in NOT_CONFIGURATION))


def key_without(run: Run, fields: set) -> tuple:
  """What the run is, seeds and `fields` aside: runs with equal keys differ only there."""
  return tuple((k, v) for k, v in run.key if k not in fields)


def read_run(workdir: str) -> Run:
  """The run in `workdir`; raises ValueError naming what is missing."""
  path = epath.Path(workdir)
  if not (path / "config.json").exists():
    raise ValueError(f"{workdir} holds no config.json: not a workdir of train.main")
  config = _flatten(json.loads((path / "config.json").read_text()))
  records = []
  if (path / "metrics.jsonl").exists():
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
  if not records:
    raise ValueError(f"{workdir} has no metrics.jsonl records yet; train it first")
  summary = (json.loads((path / "summary.json").read_text())
             if (path / "summary.json").exists() else {})
  curve = [r for r in records if r["split"] in ("validation", "validation_full")
           and "bits_per_byte" in r]
  # A resumed run logs again from its checkpoint: keep the last record of each step.
  curve = list({(r["step"], r["split"]): r for r in curve}.values())
  curve.sort(key=lambda r: (r["step"], r["split"] == "validation_full"))
  return Run(workdir, SEED_SUFFIX.sub("", path.name), config, curve,
             [r for r in records if r["split"] == "train"], summary)


def config_of(run: Run) -> ml_collections.ConfigDict:
  """The run's config, as train.main was given it."""
  return _config_dict(run.config)


def _config_dict(flat: dict) -> ml_collections.ConfigDict:
  nested = {}
  for key, value in flat.items():
    *parents, leaf = key.split(".")
    node = nested
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return ml_collections.ConfigDict(nested)


def median(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def _mean_and_spread(values):
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _final(run: Run, name: str):
  """A final figure: summary.json's, else the last evaluation's (an unfinished run)."""
  if f"final_{name}" in run.summary:
    return run.summary[f"final_{name}"]
  return run.curve[-1].get(name) if run.curve else None


def row(runs: list[Run]) -> dict:
  """One table row for the seeds of one configuration."""
  first = runs[0]
  cfg = model_config(_config_dict(first.config))
  last_train = [r.train[-1] for r in runs if r.train]
  bpb, bpb_spread = _mean_and_spread([_final(r, "bits_per_byte") for r in runs])
  loss, _ = _mean_and_spread([_final(r, "loss") for r in runs])
  accuracy, _ = _mean_and_spread([_final(r, "accuracy") for r in runs])
  tokens = median([t.get("tokens_seen") for t in last_train])
  flops = median([t.get("flops_seen") for t in last_train])
  out = {
      "label": first.label, "family": first.config["model.family"],
      "objective": first.config["objective"], "seeds": len(runs),
      "params": count_params(cfg), "non_embedding_params": count_params(cfg, embedding=False),
      "flops_per_token": flops / tokens if tokens else None, "tokens_seen": tokens,
      "tokens_per_sec": median([t.get("tokens_per_sec") for r in runs for t in r.train]),
      "mfu": median([t.get("mfu") for r in runs for t in r.train]),
      "eval_loss": loss, "bits_per_byte": bpb, "bits_per_byte_spread": bpb_spread,
      "accuracy": accuracy,
      "ngram_bits_per_byte": _mean_and_spread([r.ngram_bits_per_byte for r in runs])[0],
      "finished": all(r.summary for r in runs),
      "workdirs": [r.workdir for r in runs],
  }
  for name in first.downstream:
    out[f"downstream.{name}"] = _mean_and_spread([r.downstream.get(name) for r in runs])[0]
  return out


def group_seeds(runs: list[Run]) -> list[list[Run]]:
  """Runs grouped by configuration (seeds aside), in first-seen order."""
  groups = {}
  for run in runs:
    groups.setdefault(run.key, []).append(run)
  return list(groups.values())


def mark_comparable(rows: list[dict], runs: list[list[Run]]) -> dict:
  """Sets each row's `group` (a letter) and `vs_best` within its group; returns
  {letter: what its rows have in common}.

  `vs_best` is "best", "tie" (the gap to the best is smaller than the larger seed
  spread of the two, so the seeds cannot tell them apart) or the gap in bits per byte.
  """
  groups = {}
  for r, seeds in zip(rows, runs):
    what = tuple(seeds[0].config.get(k) for k in COMPARABLE_ON)
    letter = groups.setdefault(what, chr(ord("A") + len(groups)))
    r["group"] = letter
  for what, letter in groups.items():
    members = [r for r in rows if r["group"] == letter and r["bits_per_byte"] is not None]
    if not members:
      continue
    best = min(members, key=lambda r: r["bits_per_byte"])
    for r in members:
      gap = r["bits_per_byte"] - best["bits_per_byte"]
      spread = max(r["bits_per_byte_spread"] or 0.0, best["bits_per_byte_spread"] or 0.0)
      if r is best:
        r["vs_best"] = "best" if len(members) > 1 else "only"
      elif r["seeds"] > 1 and best["seeds"] > 1 and gap < spread:
        r["vs_best"] = "tie"
      else:
        r["vs_best"] = f"+{gap:.4f}"
  return {letter: dict(zip(COMPARABLE_ON, what)) for what, letter in groups.items()}


COLUMNS = (("label", "run"), ("family", "family"), ("objective", "objective"),
           ("seeds", "seeds"), ("params", "params"),
           ("non_embedding_params", "non-emb. params"), ("flops_per_token", "FLOPs/token"),
           ("tokens_seen", "tokens"), ("tokens_per_sec", "tokens/s"), ("mfu", "MFU"),
           ("eval_loss", "eval loss"), ("bits_per_byte", "bits/byte"),
           ("bits_per_byte_spread", "± (seeds)"), ("group", "comparable"),
           ("vs_best", "vs best"), ("accuracy", "token acc."),
           ("ngram_bits_per_byte", "n-gram bits/byte"))


def _cell(value) -> str:
  if value is None:
    return ""
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
  if isinstance(value, int) and abs(value) >= 10_000:
    return f"{value:,}"
  return str(value)


def columns(rows: list[dict]) -> list[tuple[str, str]]:
  """The table's (key, heading) pairs: the fixed ones, then any downstream metrics."""
  extra = sorted({k for r in rows for k in r if k.startswith("downstream.")})
  fixed = [c for c in COLUMNS if c[0] != "ngram_bits_per_byte"
           or any(r.get("ngram_bits_per_byte") is not None for r in rows)]
  return fixed + [(k, k.split(".", 1)[1]) for k in extra]


def markdown(rows: list[dict], groups: dict) -> str:
  """The table as Markdown, with a note per comparability group."""
  cols = columns(rows)
  lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in cols) + " |" for r in rows]
  lines.append("")
  lines.append("Bits per byte compare only within a `comparable` group: the same objective "
               "scoring the same held-out text.")
  lines += [f"- {letter}: " + ", ".join(f"{k}={v}" for k, v in what.items())
            for letter, what in groups.items()]
  if any(r.get("ngram_bits_per_byte") is not None for r in rows):
    lines.append("- n-gram: interpolated modified Kneser-Ney (train/ngram.py, order --ngram) "
                 "counted over the very rows the run trained on, scored on the same "
                 "validation rows: the statistical model at matched tokens.")
  if any(k.startswith("downstream.") for r in rows for k in r):
    lines.append("- Fine-tuned task metrics (the columns after `token acc.`) compare across "
                 "all rows: every run was fine-tuned on the same task with the same budget.")
  if any(r.get("vs_best") == "tie" for r in rows):
    lines.append("- tie: the gap to the group's best is within the seeds' spread (stdev).")
  return "\n".join(lines) + "\n"
