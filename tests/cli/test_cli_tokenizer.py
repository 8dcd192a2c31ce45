"""`dlforge tokenizer train|encode|decode|report` and `dlforge lm prepare` as a person runs them, one after the other
through the CLI in one fresh process (`run_together`); person-made mistakes end in one line and exit code 2."""

from __future__ import annotations

import json

import pytest
from clitools import ok_json, one_line_error, run_together

from dlforge.data.corpus import load_corpus
from dlforge.text.tokenizer import load_tokenizer, train_tokenizer

TEXT = ("From fairest creatures we desire increase,\nThat thereby beauty's rose might never die,\n"
        "But as the riper should by time decease,\nHis tender heir might bear his memory: ✓ ñ\n")


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(10):
        (corpus / f"part{i}.txt").write_text(f"Sonnet {i}\n" + TEXT * (i + 1), encoding="utf-8")
    train_tokenizer(load_corpus(corpus).documents("train"), "bpe", 300).save(root / "here")  # in this process
    commands = {
        "train": ["tokenizer", "train", "corpus", "--type", "bpe", "--vocab-size", "300", "--out", "tok", "--json"],
        "wordpiece": ["tokenizer", "train", "corpus", "--type", "wordpiece", "--vocab-size", "200", "--out", "wp"],
        "encode": ["tokenizer", "encode", "here", "beauty's rose ✓", "--json"],
        "decode": ["tokenizer", "decode", "here", "70", "71", "72"],
        "report": ["tokenizer", "report", "here", "corpus/part3.txt", "--json"],
        "prepare": ["lm", "prepare", "corpus", "--tokenizer", "here", "--out", "shards", "--json"],
        "bad_path": ["tokenizer", "train", "no/such/corpus", "--vocab-size", "300", "--out", "x"],
        "bad_vocab": ["tokenizer", "train", "corpus", "--vocab-size", "100", "--out", "y"],
    }
    return root, run_together(commands, cwd=root)


def test_train_reports_and_matches_training_in_another_process(cli):
    root, procs = cli
    report = ok_json(procs["train"])
    here = load_tokenizer(root / "here")
    assert report["hash"] == here.hash == load_tokenizer(root / "tok").hash  # the same vocabulary, process to process
    assert report["vocab_size"] == 300 and report["split"] == "val" and report["chars_per_token"] > 1
    assert report["unknown_share"] == 0 and report["tokens"] == len(here.encode_batch(
        load_corpus(root / "corpus").documents("val"))[0])
    assert procs["wordpiece"].returncode == 0, procs["wordpiece"].stderr
    wordpiece = train_tokenizer(load_corpus(root / "corpus").documents("train"), "wordpiece", 200)
    assert load_tokenizer(root / "wp").hash == wordpiece.hash and (root / "wp" / "vocab.txt").is_file()


def test_encode_decode_and_report(cli):
    root, procs = cli
    here = load_tokenizer(root / "here")
    encoded = ok_json(procs["encode"])
    assert encoded["ids"] == here.encode("beauty's rose ✓") and len(encoded["tokens"]) == len(encoded["ids"])
    assert procs["decode"].stdout == here.decode([70, 71, 72]) + "\n"
    report = ok_json(procs["report"])
    text = (root / "corpus" / "part3.txt").read_text()
    assert report["split"] == "all" and report["chars"] == len(text)
    assert report["chars_per_token"] == pytest.approx(len(text) / len(here.encode(text)))


def test_lm_prepare_json(cli):
    root, procs = cli
    meta = ok_json(procs["prepare"])
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["hash"] == load_tokenizer(root / "here").hash
    assert json.loads((root / "shards" / "meta.json").read_text())["splits"] == meta["splits"]
    assert (root / "shards" / "train.bin").stat().st_size == 2 * meta["splits"]["train"]["tokens"]


def test_mistakes_are_one_line_with_exit_code_2(cli):
    _, procs = cli
    assert "no/such/corpus: no such file or folder, and not a built-in corpus" in one_line_error(procs["bad_path"])
    assert "vocab_size: byte-level BPE needs at least 256 byte tokens + 1 special" in one_line_error(procs["bad_vocab"])
