"""The shipped instruction set: regenerated from the plays it is byte for byte the same, its splits hold out whole
plays and a whole question template, and every record reads as sft_jsonl data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dlforge.data.corpus import find_plays, load_corpus
from dlforge.data.sft import BUILTIN, read_conversations

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "datasets" / "shakespeare_qa.py"
SHIPPED = BUILTIN["shakespeare_qa"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("shakespeare_qa", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def records(split: str) -> list[dict]:
    return [json.loads(line) for line in (SHIPPED / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_regenerating_gives_the_shipped_files(script, tmp_path):
    counts = script.write(tmp_path)
    for split in ("train", "val", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (SHIPPED / f"{split}.jsonl").read_bytes(), split
        assert counts[split] == len(records(split)) > 0


def test_splits_hold_out_plays_and_a_template():
    plays = load_corpus("shakespeare").names
    train, val, test = records("train"), records("val"), records("test")
    assert {r["play"] for r in train} == set(plays["train"])
    assert {r["play"] for r in val} == set(plays["val"]) and all(r["holdout"] == "play" for r in val)
    by_play = [r for r in test if r["holdout"] == "play"]
    by_template = [r for r in test if r["holdout"] == "template"]
    assert {r["play"] for r in by_play} == set(plays["test"])
    assert {r["template"] for r in by_template} == {"last_speaker"} and {r["play"] for r in by_template} <= set(
        plays["train"])
    assert "last_speaker" not in {r["template"] for r in train + val + by_play}


def test_answers_come_from_the_text(script):
    hamlet = script.parse_play(find_plays()["hamlet"])
    assert hamlet.title == "Hamlet" and hamlet.genre == "a tragedy"
    first = next(r for r in records("train") if r["play"] == "hamlet" and r["template"] == "first_speaker")
    assert first["completion"] == hamlet.speeches[0][0] == "BERNARDO"  # "**BERNARDO**  Who's there?"
    most = next(r for r in records("train") if r["play"] == "hamlet" and r["template"] == "most_lines")
    counts = hamlet.lines_by_speaker()
    assert counts[most["completion"]] == max(counts.values())
    for r in records("train"):
        if r.get("template") == "quote_speaker" and r["play"] == "hamlet":
            quote = r["prompt"].split('"')[1]
            assert any(s == r["completion"] and quote in lines for s, lines in hamlet.speeches)


def test_every_record_reads_as_sft_data():
    for split in ("train", "val", "test"):
        read = read_conversations(SHIPPED / f"{split}.jsonl")
        assert len(read) == len(records(split))
        assert all(any(m["role"] == "assistant" for m in r["messages"]) for r in read)
