"""The checks of the paths a person gives (issue 13, defects 9 and 31): each mistake one DataError line naming the
path, what it is and what was expected; a name no file can have is told as such, never an OSError."""

from __future__ import annotations

import pytest

from dlforge.errors import ConfigError, DataError
from dlforge.paths import (
    NAME_MAX,
    existing,
    existing_dir,
    existing_file,
    exists,
    fitting_name,
    output_file,
    output_folder,
    refuse_existing,
)


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "d").mkdir()
    return tmp_path


def message(check, *args) -> str:
    with pytest.raises(DataError) as info:
        check(*args)
    return str(info.value)


def test_inputs(where):
    assert existing_file("f.txt", "a text file").name == "f.txt" and existing_dir("d", "a folder").name == "d"
    assert existing("f.txt", "x") and existing("d", "x")
    assert message(existing_file, "nope.txt", "a text file") == "nope.txt: not found; expected a text file"
    assert message(existing_file, "d", "a text file") == "d: is a folder; expected a text file"
    assert message(existing_dir, "f.txt", "a folder of documents") == "f.txt: is a file; expected a folder of documents"
    assert message(existing, "nope", "inputs") == "nope: not found; expected inputs"
    with pytest.raises(ConfigError, match="expected a YAML file"):  # the caller picks the kind of error
        existing_file("nope.yaml", "a YAML file", ConfigError)


def test_outputs(where):
    assert output_file("out.csv", "a CSV").name == "out.csv" and output_folder("d", "a folder").name == "d"
    assert output_file("new/sub/out.png", "a PNG", parents=True).name == "out.png"  # folders to be made
    assert message(output_file, "new/out.csv", "a CSV") == "new/out.csv: the folder new does not exist"
    assert message(output_file, "d", "a CSV") == "d: is a folder; expected a CSV"
    assert message(output_file, "out.txt", "the curves", (".png",)) == "out.txt: expected the curves, a .png file"
    assert message(output_file, "f.txt/out.csv", "a CSV") == "f.txt/out.csv: cannot be written: f.txt is a file, " \
                                                             "not a folder"
    assert message(output_folder, "f.txt", "a folder") == "f.txt: is a file; expected a folder"
    assert message(output_folder, "f.txt/a/b", "a folder") == "f.txt/a/b: cannot be written: f.txt is a file, not " \
                                                              "a folder"
    assert "already exists; pass --overwrite" in message(refuse_existing, "d", False)
    assert "is a file; the output is a folder" in message(refuse_existing, "f.txt", True)
    assert "f.txt is a file" in message(refuse_existing, "f.txt/x", False)


def test_names_no_file_can_have_are_errors_not_oserrors(where):
    long = "x" * (NAME_MAX + 1)
    assert not exists(long) and not exists("a\0b") and exists("f.txt")  # Path.exists raises on both
    for check in (existing_file, existing_dir, existing, output_file, output_folder):
        assert "too long a path" in message(check, long, "x")
        assert "cannot hold a NUL" in message(check, "a\0b", "x")
    assert len(message(existing_file, long, "x")) < 300  # the name itself is cut short
    assert fitting_name("run-1", "name") == "run-1"
    with pytest.raises(ConfigError, match=r"300 bytes long; at most 255"):
        fitting_name("x" * 300, "name")
