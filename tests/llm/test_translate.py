"""Translation end to end: sentence-pair batches, the Bible split by book, a smoke run of the bible-en-es preset
with a tiny model, and `dlforge translate` / `dlforge eval --json` on that run."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from clitools import ok_json, run_cli, run_here

import dlforge
from dlforge.api import build_data
from dlforge.config import load_config
from dlforge.data.dataset import sample_lengths
from dlforge.data.sword import HELD_OUT_BOOKS
from dlforge.data.translation import (
    BibleTranslationConfig,
    PairDataset,
    build_translation,
    translation_tokenizers,
    undo_drop_caps,
)
from dlforge.errors import ConfigError
from dlforge.llm.translate import translate
from dlforge.train.sampler import StepBatchSampler

PAD, BOS, EOS = 0, 1, 2
TINY = ["model.dim=32", "model.n_heads=2", "model.encoder_layers=1", "model.decoder_layers=1", "model.ffn_hidden=64",
        "data.tokenizer=bpe:600", "data.limit=48", "train.max_steps=12", "train.batch_size=16", "train.warmup_steps=2",
        "train.eval_every=6", "train.checkpoint_every=6", "train.log_every=3", "train.progress=false",
        "train.tensorboard=false"]


def test_pair_batches_pad_to_the_longest_and_shift_the_target():
    ds = PairDataset([[5, 6, 7, EOS], [8, EOS]], [[10, 11], [12, 13, 14]], ["a b c", "d"], ["x y", "z w v"],
                     pad_id=PAD, bos_id=BOS, eos_id=EOS)
    batch = ds.__getitems__([1, 0])
    assert batch["input_ids"].tolist() == [[8, EOS, PAD, PAD], [5, 6, 7, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["decoder_input_ids"].tolist() == [[BOS, 12, 13, 14], [BOS, 10, 11, PAD]]
    assert batch["labels"].tolist() == [[12, 13, 14, EOS], [10, 11, EOS, -100]]
    assert ds.lengths.tolist() == [4, 4]
    one = ds[0]
    assert one["labels"].tolist() == [10, 11, EOS] and one["input_ids"].tolist() == [5, 6, 7, EOS]


def test_drop_caps_at_chapter_openings_become_sentence_case():
    pairs = [("Gen", 1, 1, "In the beginning the LORD", "EN el principio"),
             ("Gen", 1, 2, "And the LORD said", "Y dijo"),
             ("Gen", 2, 1, "LORD, thou art", "Y LOS cielos"),
             ("Gen", 2, 2, "the LORD", "los cielos")]
    fixed = undo_drop_caps(pairs)
    assert [p[4] for p in fixed] == ["En el principio", "Y dijo", "Y Los cielos", "los cielos"]
    assert [p[3] for p in fixed] == [p[3] for p in pairs]  # LORD is in capitals inside verses too: it stays


def test_separate_vocabularies_keep_a_source_tokenizer_beside_the_target_one():
    english = ["the word of the lord", "and god said", "in the beginning", "the light of men"] * 5
    spanish = ["la palabra del señor", "y dijo dios", "en el principio", "la luz de los hombres"] * 5
    config = BibleTranslationConfig(name="bible_translation", tokenizer="bpe:300", shared_vocab=False)
    data = build_translation({"train": (english, spanish), "val": ([], []), "test": (english[:2], spanish[:2])},
                             config, source_name="test")
    assert data.model_defaults["target_vocab_size"] == data.tokenizer.vocab_size
    assert data.val is None and len(data.test) == 2
    meta = {"extra": {**data.tokenizer.files(), "preprocessing.json": {**data.preprocessing,
                                                                       "tokenizer_hash": data.tokenizer.hash}}}
    source, target = translation_tokenizers(meta, where="test")
    assert target.hash == data.tokenizer.hash and source.hash != target.hash
    assert source.decode(data.test.__getitems__([0])["input_ids"][0, :-1].tolist()) == english[0]
    assert target.decode(data.test.__getitems__([0])["labels"][0, :-1].tolist()) == spanish[0]


@pytest.fixture(scope="module")
def bible():
    return build_data(load_config("bible-en-es", ["data.tokenizer=bpe:600"]))


def test_the_bible_is_split_by_whole_books(bible):
    books = bible.info["books"]
    assert set(books["test"]) == set(HELD_OUT_BOOKS["test"]) and set(books["val"]) == set(HELD_OUT_BOOKS["val"])
    assert not set(books["train"]) & (set(books["val"]) | set(books["test"]))
    assert bible.info["n_train"] > 10_000 and 400 < bible.info["n_val"] < 1000 and 400 < bible.info["n_test"] < 1000
    for split in ("train", "val", "test"):
        ds = getattr(bible, split)
        assert all(len(s.split()) <= 20 and len(t.split()) <= 20 for s, t in zip(ds.sources, ds.targets, strict=True))
    assert bible.test.sources.index("Jesus wept.") == bible.test.targets.index("Y lloró Jesús.")  # John 11:35
    assert bible.model_defaults["target_vocab_size"] is None  # one shared vocabulary by default


def test_unknown_held_out_book_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="data.test_books.*'Jhon'.*John"):
        build_data(load_config("bible-en-es", ["data.test_books=[Jhon]"]))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = dlforge.train("bible-en-es", [*TINY, f"runs_dir={runs}"])
    return result, runs


def test_translation_smoke_run_reports_bleu_and_chrf(smoke_run):
    result, _ = smoke_run
    assert result.status == "completed" and result.steps == 12
    ev = json.loads((result.run_dir / "eval.json").read_text())
    for split in ("val", "test"):
        for key in ("bleu", "chrf", "bleu_greedy", "chrf_greedy", "loss", "accuracy", "perplexity"):
            assert 0 <= ev[split][key] == ev[split][key]  # a number, not NaN
        report = ev["translation"][split]
        assert report["sentences"] == 48 and report["decoding"]["beam_size"] == 4
        assert "tok:13a" in report["bleu_signature"] and len(report["samples"]) == 5
    # BLEU and chrF, measured at the end only, are plotted (issue 13, defect 23)
    assert (result.run_dir / "plots" / "scores.png").read_bytes().startswith(b"\x89PNG")
    model = dlforge.load(result.run_dir)
    assert model.registry_name == "transformer_seq2seq" and model.config.target_vocab_size is None


def test_trained_model_translates_in_batches_like_one_by_one(smoke_run, capsys, monkeypatch):
    from types import SimpleNamespace

    from dlforge.llm.translate import load_translator
    from dlforge.runs import progress

    result, _ = smoke_run
    model, source_tok, target_tok = load_translator(result.run_dir)
    texts = ["In the beginning was the Word.", "Jesus wept.", "And God said, Let there be light: and there was light."]
    ticks = iter(range(0, 10_000, 40))  # a minute's work per batch: long enough for a progress line off a terminal
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    capsys.readouterr()
    together = translate(model, source_tok, target_tok, texts, beam_size=3, batch_size=2)
    lines = capsys.readouterr().err.splitlines()  # beam search over a split is long: `dlforge eval` says how far
    assert [line.split(",")[0] for line in lines] == ["translate (beam 3): 2/3 sentences (67%)",
                                                      "translate (beam 3): 3/3 sentences (100%)"], lines
    assert "sentences/s, ETA" in lines[0]
    alone = [translate(model, source_tok, target_tok, [t], beam_size=3)[0] for t in texts]
    assert [t.translation for t in together] == [t.translation for t in alone]
    assert [t.source for t in together] == texts


def test_cli_translate_and_eval_json(smoke_run):
    result, runs = smoke_run
    run = str(result.run_dir)
    (runs / "verses.txt").write_text("In the beginning was the Word.\n\nAnd the Word was God.\n", encoding="utf-8")
    commands = {"translate": ["translate", run, "Jesus wept.", "--file", "verses.txt", "--beam", "2", "--json"],
                "eval": ["eval", run, "--json"],
                "empty": ["translate", run]}
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = {k: f.result() for k, f in {k: pool.submit(run_cli, *a, cwd=runs) for k, a in commands.items()}.items()}
    translated = json.loads(procs["translate"].stdout)
    sources = ["Jesus wept.", "In the beginning was the Word.", "And the Word was God."]  # arguments, then the file
    assert [r["source"] for r in translated] == sources
    assert all(isinstance(r["translation"], str) and r["logprob"] <= 0 for r in translated)
    evaluated = json.loads(procs["eval"].stdout)["metrics"]
    recorded = json.loads((result.run_dir / "eval.json").read_text())["test"]
    for key in ("bleu", "chrf", "bleu_greedy", "loss"):
        assert evaluated[key] == pytest.approx(recorded[key], abs=1e-4)
    assert procs["empty"].returncode == 2 and "give sentences" in procs["empty"].stderr


def test_predict_translates_each_sentence_of_a_file(capsys, smoke_run, tmp_path):
    from dlforge.llm.translate import load_translator

    result, _ = smoke_run
    verses = ["Jesus wept.", "In the beginning was the Word."]
    lines = tmp_path / "sentences.txt"
    lines.write_text(f"{verses[0]}\n\n{verses[1]}\n")
    rows = ok_json(run_here(capsys, "predict", str(result.run_dir), str(lines), "--json"))
    expected = translate(*load_translator(result.run_dir), verses)  # beam search, as `dlforge translate`
    assert [(r["line"], r["source"], r["translation"]) for r in rows] == [
        (1, verses[0], expected[0].translation), (3, verses[1], expected[1].translation)]
    records = tmp_path / "sentences.jsonl"
    records.write_text("".join(json.dumps({"source": v}) + "\n" for v in verses))
    assert [r["translation"] for r in dlforge.predict(result.run_dir, records)] == [r["translation"] for r in rows]
    card = (result.run_dir / "README.md").read_text()
    assert f"dlforge predict {result.run_dir.as_posix()} sentences.txt\n" in card


def test_length_grouped_batches_of_the_bible_are_less_padded(bible):
    def padded(lengths) -> int:
        batches = list(StepBatchSampler(len(bible.train), 64, seed=0, lengths=lengths))
        return sum(bible.train.__getitems__(b)["labels"].numel() for b in batches)

    assert padded(sample_lengths(bible.train)) < 0.8 * padded(None)
