"""What a config may expand to, and how much of it an error repeats (issue 13, defect 31): a YAML alias bomb gave a
312 MB one-line error (1.3 GB of memory); deep nesting and run names over 255 bytes ended in tracebacks."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from dlforge.config import load_config
from dlforge.errors import ConfigError, clip, clip_repr
from dlforge.paths import RUN_NAME_MAX
from dlforge.safe_yaml import YAML_MAX_BYTES, YAML_MAX_DEPTH, load_yaml, read_yaml

BASE = ["data:", "  name: iris", "model:", "  name: mlp", "train:", "  max_steps: 5"]


def alias_bomb(flow: bool = False, levels: int = 9) -> str:
    """The "billion laughs": each level a list of 9 aliases of the one before, 9**9 values in a few hundred bytes;
    as YAML lines, or (`flow`) as one mapping on one line, as an override's value may be."""
    items = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "{" + ", ".join(items) + "}" if flow else "\n".join(items) + "\n"


def refused(source, overrides: list[str] | None = None) -> str:
    """The one-line ConfigError of `load_config`."""
    with pytest.raises(ConfigError) as info:
        load_config(source, overrides or [])
    message = str(info.value)
    assert "\n" not in message
    return message


def measured(source, overrides: list[str] | None = None) -> tuple[str, float, int]:
    """`refused`, with its seconds and the peak bytes allocated on the way."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        message = refused(source, overrides)
        return message, time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_alias_bomb_is_refused_at_once_in_small_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(BASE) + "\n" + alias_bomb())
    message, seconds, peak = measured(path)
    assert message.startswith(f"{path}:1: more than") and "aliases are expanded" in message, message
    assert len(message) < 300
    assert seconds < 2 and peak < 20 * 2**20, (seconds, peak)


def test_an_alias_bomb_in_an_override_is_refused_too(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("\n".join(BASE) + "\n")
    assert load_config(path, ["train.milestones=[&m 10, *m]"]).train.milestones == [10, 10]  # a small alias is fine
    message, seconds, peak = measured(path, [f"train.milestones={alias_bomb(flow=True)}"])
    assert message.startswith("override 'train.milestones=") and "aliases are expanded" in message, message
    assert len(message) < 400 and seconds < 2 and peak < 20 * 2**20, (seconds, peak)


@pytest.mark.parametrize("nested", ["[" * 2000 + "]" * 2000, "\n" + "\n".join("  " * i + "k:" for i in range(1, 600))])
def test_deep_nesting_is_refused_in_one_line(tmp_path, nested):
    """Flow and block nesting: PyYAML's composer recurses once per level and, unchecked, ends in RecursionError."""
    path = tmp_path / "deep.yaml"
    path.write_text("\n".join(BASE) + f"\nextra: {nested}\n")
    message = refused(path)
    assert f"nested deeper than {YAML_MAX_DEPTH} levels" in message and message.startswith(f"{path}:"), message


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="an alias refers to the value that holds it"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")
    assert load_yaml("a: &a [1, 2]\nb: *a\nc: *a\n", "fine.yaml") == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def test_a_config_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("\n".join(BASE) + "\n# " + "x" * YAML_MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"huge\.yaml: larger than 1 MiB"):
        read_yaml(path)


def test_run_names_must_fit_a_folder_name(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(BASE) + "\n")
    assert load_config(path, [f"name={'é' * (RUN_NAME_MAX // 2)}"]).name == "é" * (RUN_NAME_MAX // 2)  # 2 bytes each
    message = refused(path, [f"name={'é' * (RUN_NAME_MAX // 2 + 1)}"])
    assert f"{RUN_NAME_MAX + 2} bytes long; at most {RUN_NAME_MAX}" in message and len(message) < 300, message
    for bad in ("a/b", "..", ""):
        assert "expected a non-empty name without '/'" in refused(path, [f"name={bad}"])


def test_errors_repeat_at_most_a_little_of_the_input(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(BASE) + "\n")
    long_list = "[" + ", ".join(["1"] * 5000) + "]"
    for override in (f"train.lr={long_list}", f"train.device={'x' * 5000}", f"train.{'k' * 5000}=1", "x" * 5000):
        message = refused(path, [override])
        assert len(message) < 600, message[:1000]
    assert clip("x" * 1000, 20) == "x" * 17 + "..." and clip("short") == "short"
    deep: list = []
    for _ in range(10_000):  # deeper than repr could go
        deep = [deep, 1]
    assert len(clip_repr(deep)) <= 200
