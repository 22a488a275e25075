"""The data a run trains on, fingerprinted in its workdir; a resume on changed data stops.

`workdir/data_fingerprint.json` holds the fingerprint (train/data.py's Data.fingerprint:
the source's files or dataset, and the tokenizer) the run began with. A resume that finds
other data stops in one line saying what changed, unless `--accept_changed_data`: then
the change is recorded in the file (when, what, the fingerprint before) and the new
fingerprint is the one later resumes compare with.
"""
import json
import os
import time

from absl import logging
import jax

FILE = "data_fingerprint.json"
SHOWN = 4  # changes named in the error; the rest are counted


def _leaves(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for k, v in tree.items():
    out.update(_leaves(v, f"{prefix}/{k}" if prefix else str(k)))
  return out


def differences(before: dict, now: dict) -> list[str]:
  """"path: old -> new" for each leaf that differs ("missing" where a side lacks it)."""
  a, b = _leaves(before), _leaves(now)
  return [f"{k}: {a.get(k, 'missing')} -> {b.get(k, 'missing')}"
          for k in sorted(a.keys() | b.keys()) if a.get(k, "missing") != b.get(k, "missing")]


def _write(path: str, record: dict) -> None:
  if jax.process_index() != 0:  # the hosts compare; one writes
    return
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)


def check(workdir: str, fingerprint: dict, accept_changed: bool = False) -> None:
  """Records `fingerprint` on a workdir's first run; on later runs raises ValueError naming
  what changed, or with `accept_changed`, records the change and goes on."""
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    _write(path, {"fingerprint": fingerprint, "accepted_changes": []})
    return
  with open(path, encoding="utf-8") as f:
    record = json.load(f)
  changes = differences(record["fingerprint"], fingerprint)
  if not changes:
    return
  shown = "; ".join(changes[:SHOWN]) + (f"; and {len(changes) - SHOWN} more"
                                         if len(changes) > SHOWN else "")
  if not accept_changed:
    raise ValueError(f"the data changed since this workdir's run began ({shown}); rerun with "
                     "--accept_changed_data to train on it anyway (recorded in the workdir), "
                     "or use a new --workdir")
  logging.warning("Training on changed data, as --accept_changed_data allows: %s", shown)
  record["accepted_changes"].append({"time": time.time(), "changes": changes,
                                     "before": record["fingerprint"]})
  record["fingerprint"] = fingerprint
  _write(path, record)
