"""The README's commands and snippets, run as tests: what it promises is what happens."""

from __future__ import annotations

import re
from pathlib import Path

from clitools import run_cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_two_commands():
    first = blocks("bash")[0]
    assert first.lstrip().startswith("make demo") and "make test" in first


def test_python_snippet_runs(tmp_path, monkeypatch, capsys):
    import dlforge.train.optim as optim  # the subpackage imported first must not hide the function dlforge.train
    import dlforge.train.trainer  # noqa: F401

    assert optim.build_optimizer
    monkeypatch.chdir(tmp_path)
    snippet = next(b for b in blocks("python") if "dlforge.train(" in b)
    exec(compile(snippet, "README.md", "exec"), {})
    out = capsys.readouterr().out.split()
    assert (tmp_path / "runs").is_dir() and float(out[1]) > 0.8  # iris test accuracy


def test_embedding_snippet_runs():
    import numpy as np

    snippet = next(b for b in blocks("python") if "load_sentence_embedder" in b)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    vectors = scope["vectors"]
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_quoted_config_error_is_what_the_cli_prints(tmp_path):
    text = blocks("text")[0]
    cmd, expected = text.splitlines()[0].removeprefix("$ dlforge ").split(), text.splitlines()[1]
    proc = run_cli(*cmd, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == expected


def test_yaml_example_validates(tmp_path):
    import yaml

    from dlforge.config import load_config

    raw = yaml.safe_load(blocks("yaml")[0])
    cfg = load_config(raw)
    assert cfg.data["target"] == "churned" and cfg.train.early_stopping.metric == "val/f1"
