"""setup.py declares what the project imports: a core install runs every module."""
import ast
import importlib.metadata
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("model", "train", "tools", "configs")


def _core_requirements() -> set[str]:
  """Distribution names in setup.py's install_requires."""
  setup = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
  listed = next(ast.literal_eval(k.value) for node in ast.walk(setup)
                if isinstance(node, ast.Call) for k in node.keywords
                if k.arg == "install_requires")
  return {re.split(r"[<>=\[ ]", r)[0].lower().replace("_", "-") for r in listed}


def _module_level_imports(path: pathlib.Path) -> set[str]:
  """Top-level names of the modules `path` imports when it is imported (not inside
  functions, where optional tools import what only they need)."""
  names = set()
  for node in ast.parse(path.read_text(encoding="utf-8")).body:
    if isinstance(node, ast.Import):
      names |= {a.name.split(".")[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split(".")[0])
  return names - set(sys.stdlib_module_names) - set(PACKAGES)


def test_every_module_level_import_is_a_core_requirement():
  core, distributions = _core_requirements(), importlib.metadata.packages_distributions()
  missing = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      for name in _module_level_imports(path):
        provided = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
        if not provided & core:
          missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
  assert not missing, f"imported but not in setup.py's install_requires: {missing}"
