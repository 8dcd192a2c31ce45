"""No command replaces or wipes a user's existing output without --overwrite, and the check comes before any work
(issue 13, defects 18 and 25): tokenizer train, lm prepare, lm import-gpt2, lm export-gpt2, lm merge-lora."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import run_cli

from dlforge.errors import DataError
from dlforge.llm.gpt2 import export_gpt2, import_gpt2
from dlforge.llm.lora import merge_adapter
from dlforge.llm.prepare import prepare_shards, train_corpus_tokenizer


def existing_outputs(tmp_path):
    folder = tmp_path / "out-folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    file = tmp_path / "out-file"
    file.write_text("mine too")
    return folder, file


WRITERS = {
    "import-gpt2": lambda out, ow: import_gpt2("no-such-gpt2-folder", out, overwrite=ow),
    "export-gpt2": lambda out, ow: export_gpt2("no-such-run", out, overwrite=ow),
    "merge-lora": lambda out, ow: merge_adapter("no-such-base", "no-such-adapter", out, overwrite=ow),
    "prepare": lambda out, ow: prepare_shards("no-such-corpus", "char", out, overwrite=ow),
    "tokenizer": lambda out, ow: train_corpus_tokenizer("no-such-corpus", "bpe", 300, out, overwrite=ow),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_an_existing_output_is_refused_before_anything_is_read(tmp_path, name):
    folder, file = existing_outputs(tmp_path)
    for out in (folder, file):
        with pytest.raises(DataError, match=rf"^{out}: already exists; pass --overwrite"):
            WRITERS[name](out, False)  # the sources do not exist: the refusal came first
    assert (folder / "keep.txt").read_text() == "mine" and file.read_text() == "mine too"
    with pytest.raises(DataError, match=rf"^{file}: is a file; the output is a folder"):
        WRITERS[name](file, True)
    assert file.read_text() == "mine too"


def test_tokenizer_train_through_the_cli_keeps_an_existing_folder_unless_told(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 200)
    out, _ = existing_outputs(tmp_path)
    refused = run_cli("tokenizer", "train", str(corpus), "--out", str(out), "--vocab-size", "300", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "already exists; pass --overwrite" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    done = run_cli("tokenizer", "train", str(corpus), "--out", str(out), "--vocab-size", "300", "--overwrite",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (out / "tokenizer.json").is_file()


def test_outputs_default_to_the_workspace(tmp_path, monkeypatch):
    """Without --out, every writer puts its output under runs/ (ignored by git), named after what it came from
    (issue 13, defect 17)."""
    import transformers

    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "notes.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 200)
    report = train_corpus_tokenizer(str(corpus), "bpe", 300, None)
    assert report["out"] == "runs/tokenizers/notes-bpe300" and (tmp_path / report["out"] / "tokenizer.json").is_file()
    assert prepare_shards(str(corpus), report["out"])["out"] == "runs/shards/notes-bpe300"  # not notes-notes-...
    assert prepare_shards(str(corpus), "char")["out"] == "runs/shards/notes-char"
    with pytest.raises(DataError, match="^runs/shards/notes-char: already exists; pass --overwrite"):
        prepare_shards(str(corpus), "char")  # the same command twice: the rule for an existing output holds

    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "my-gpt2")
    imported = import_gpt2(tmp_path / "my-gpt2")
    assert imported == Path("runs/models/my-gpt2") and (tmp_path / imported / "model.safetensors").is_file()
    assert export_gpt2(imported) == Path("runs/exports/my-gpt2-gpt2")
