"""Write dlforge/catalog_index.py: which module registers each built-in model, dataset and task, and the config keys
of each model and dataset, read from the loaded zoo. The registry uses it to import only the one file a name needs,
and config validation to refuse an unknown model or data key before torch loads (`dlforge.registry`). A test checks
that the index is up to date; rerun this script after adding or renaming a model, dataset, task or config field:

    python scripts/docs/catalog_index.py
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from dlforge import registry
from dlforge.cli.main import run_script

INDEX = Path(__file__).resolve().parents[2] / "dlforge" / "catalog_index.py"

HEADER = '''"""Which module registers each built-in model, dataset and task, and each model's and dataset's config keys.

Written by scripts/docs/catalog_index.py from the loaded zoo; do not edit by hand: rerun the script (a test checks it).
`dlforge.registry` imports the one module a name needs instead of the whole zoo, and `dlforge.config` refuses an
unknown model or data key from here, before torch loads.
"""

'''


def builtin(entry: registry.Entry) -> bool:
    return entry.fn.__module__.startswith("dlforge.")


def index_text() -> str:
    """The text of dlforge/catalog_index.py for the zoo as it is now (plug-ins from other packages left out)."""
    registry.load_plugins()
    models = {e.name: (e.fn.__module__, tuple(registry.config_fields(e.config_cls)))
              for e in registry.model_entries() if builtin(e)}
    datasets = {e.name: (e.fn.__module__, tuple(registry.config_fields(e.config_cls)))
                for e in registry.dataset_entries() if builtin(e)}
    tasks = {name: registry.task_entry(name).fn.__module__ for name in registry.list_tasks()
             if builtin(registry.task_entry(name))}
    return (HEADER + _table("MODELS", models, "name: (module, config keys)") + "\n"
            + _table("DATASETS", datasets, "name: (module, config keys)") + "\n"
            + _table("TASKS", tasks, "name: module"))


def _table(title: str, table: dict, what: str) -> str:
    lines = [f"{title} = {{  # {what}"]
    for name in sorted(table):
        value = table[name]
        if isinstance(value, str):
            lines.append(f"    {name!r}: {value!r},")
            continue
        module, keys = value
        wrapped = textwrap.wrap(", ".join(repr(k) for k in keys), width=112)
        lines.append(f"    {name!r}: ({module!r}, (")
        lines += [f"        {line}" for line in wrapped]
        lines.append("    )),")
    return "\n".join([*lines, "}"]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the index is out of date, write nothing")
    args = parser.parse_args()
    text = index_text()
    if args.check:
        raise SystemExit(0 if INDEX.read_text() == text else 1)
    INDEX.write_text(text)
    print(f"wrote {INDEX}")


if __name__ == "__main__":
    run_script(main)
