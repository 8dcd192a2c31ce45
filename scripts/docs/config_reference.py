"""Write docs/guides/config-reference.md: every config key, its type, default, allowed values and description, from
the config schema and the registered dataset and model config classes (what `dlforge config keys` prints). A test
checks that the page is up to date; rerun this script after changing a config field:

    python scripts/docs/config_reference.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlforge.cli.main import run_script
from dlforge.config_keys import config_keys, value_text
from dlforge.registry import dataset_entries, model_entries

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "config-reference.md"

INTRO = """# Config reference

<!-- Written by scripts/docs/config_reference.py from the config schema; do not edit by hand: rerun the script. -->

Every key a config can hold, section by section: its type, its default, the values it allows and what it does. A
key is set in a YAML file (`train: {lr: 3e-3}`) or as an override (`dlforge train wine-mlp train.lr=3e-3`). The
same tables, for one section, come from the command line:

```bash
dlforge config keys train            # or run, data NAME, model NAME; --json for scripts
dlforge config show wine-mlp         # a preset with every value resolved (overrides apply)
```

A dataset's and a model's keys depend on its name (`data.name`, `model.name`): the tables below are grouped by the
config class the names share. A named model (`resnet20`, `gpt2`...) may set defaults of its own; sizes marked "set
from the data" are filled in from the data at training time.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"`{r['key']}`", r["type"], f"`{value_text(r['default'])}`", r["allowed"], r["description"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def by_config_class(entries) -> dict[type, list[str]]:
    """Config class -> the built-in names that use it (an installed plug-in's names are not dlforge's to list)."""
    groups: dict[type, list[str]] = {}
    for e in entries:
        if e.fn.__module__.startswith("dlforge."):
            groups.setdefault(e.config_cls, []).append(e.name)
    return groups


def render() -> str:
    parts = [INTRO, "\n## run (the top level)\n\n", markdown_table(config_keys("run")),
             "\n## train\n\n", markdown_table(config_keys("train"))]
    for section, entries in (("data", dataset_entries()), ("model", model_entries())):
        parts.append(f"\n## {section}\n")
        for cls, names in sorted(by_config_class(entries).items(), key=lambda item: item[1][0]):
            shown = ", ".join(f"`{n}`" for n in names)
            parts += [f"\n### {section}.name: {shown}\n\n", f"Config class `{cls.__name__}`.\n\n",
                      markdown_table(config_keys(section, names[0]))]
    return "".join(parts)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
