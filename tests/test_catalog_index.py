"""The catalog index (dlforge/catalog_index.py) is generated from the zoo: rerun `python scripts/docs/catalog_index.py`
after adding or renaming a model, dataset, task or config field, and this test passes again."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "docs" / "catalog_index.py"


def test_the_index_is_up_to_date():
    spec = importlib.util.spec_from_file_location("catalog_index_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.INDEX.read_text() == script.index_text(), (
        "dlforge/catalog_index.py is out of date: run python scripts/docs/catalog_index.py")


def loaded_after(code: str) -> set[str]:
    """The dlforge modules a fresh interpreter has imported after running `code`."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print(' '.join(m for m in sys.modules if m.startswith('dlforge.')))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_a_built_in_name_imports_only_its_own_module():
    loaded = loaded_after("from dlforge.registry import create_model, dataset_entry, task_entry\n"
                          "create_model('mlp', in_features=3, out_features=2)\n"
                          "dataset_entry('wine'); task_entry('classification')")
    assert {"dlforge.models.mlp", "dlforge.data.tabular", "dlforge.tasks.classification"} <= loaded
    assert not loaded & {"dlforge.catalog", "dlforge.models.gpt", "dlforge.models.resnet", "dlforge.data.canvases"}


def test_a_listing_or_an_unknown_name_still_sees_the_whole_zoo():
    from dlforge.errors import ConfigError
    from dlforge.registry import list_models, model_entry

    assert "gpt" in list_models() and "mlp" in list_models()
    loaded = loaded_after("from dlforge.registry import model_entry\n"
                          "try:\n    model_entry('mpl')\nexcept Exception as e:\n    print(e)")
    assert "dlforge.catalog" in loaded
    try:
        model_entry("mpl")
    except ConfigError as exc:
        assert "did you mean 'mlp'" in str(exc)
    else:
        raise AssertionError("an unknown model name was accepted")


CANDIDATES = [1, 0, -1, 0.5, 2.5, 1e9, "abc", "auto", "relu", True, None, [1], [0, 2], ["a"], [[1, 2]], {}, {"a": "b"}]


def test_the_quick_check_refuses_only_what_the_config_class_refuses():
    """The check before torch (from the index's types) must never refuse a value the config class accepts."""
    from pydantic import ValidationError

    from dlforge.config import _validate_section
    from dlforge.errors import ConfigError
    from dlforge.registry import dataset_entries, indexed_fields, model_entries
    from dlforge.sections import _indexed_model

    checked = 0
    for kind, entries in (("model", model_entries()), ("dataset", dataset_entries())):
        for entry in entries:
            fields = indexed_fields(kind, entry.name)
            if fields is None:
                continue
            base = {"name": entry.name} if kind == "dataset" else {}
            for key in fields:
                if key == "name":
                    continue
                for value in CANDIDATES:
                    try:
                        _indexed_model(kind, entry.name, (key,)).model_validate({key: value})
                        continue
                    except ValidationError:
                        pass
                    checked += 1
                    try:
                        _validate_section(entry.config_cls, {**base, key: value}, kind)
                    except (ConfigError, ValidationError, ValueError, TypeError):
                        continue
                    raise AssertionError(f"{kind} {entry.name}: {key}={value!r} refused by the quick check only")
    assert checked > 1000
