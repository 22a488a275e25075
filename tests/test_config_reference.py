"""docs/config.md is tools/config_reference.py's output, and it documents every field."""
import functools
import pathlib
import re

from configs import common
from tools import config_reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
REGENERATE = "python -m tools.config_reference --out=docs/config.md"


@functools.cache
def _rows() -> dict[str, list[str]]:
  """{field: [default, allowed values, meaning]} of every table row of the reference."""
  rows = {}
  for line in config_reference.reference().splitlines():
    if line.startswith("| `"):
      cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
      rows[cells[0].strip("`")] = cells[1:]
  return rows


def test_docs_config_md_is_the_generated_reference():
  written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
  assert written == config_reference.reference(), (
      f"docs/config.md is out of date with configs/common.py; regenerate it: {REGENERATE}")


def test_every_field_appears_with_its_default():
  leaves = config_reference.leaves(common.base_config())
  assert sorted(_rows()) == sorted(leaves)
  for path, value in leaves.items():
    # The default as written in configs/common.py (`1e-3`, `DEFAULT_RULES`) is the value.
    shown = eval(_rows()[path][0].strip("`"), dict(vars(common)))  # pylint: disable=eval-used
    assert shown == value and type(shown) is type(value), (path, shown, value)


def test_every_field_has_a_meaning():
  missing = [path for path, (_, _, meaning) in _rows().items() if not meaning]
  assert not missing, (f"fields without a meaning: {missing}; give each a trailing `# comment` "
                       "(or a Num meaning) in configs/common.py")

