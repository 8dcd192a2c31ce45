"""`rag tune`: pairs mined without labels, contrastive fine-tuning, and the tuned index with its own fingerprint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ragtools import tiny_st_model, write_files

from dlforge.errors import ConfigError, DataError
from dlforge.rag.embed import load_embedder
from dlforge.rag.ingest import index_folder
from dlforge.rag.mine import mine_pairs, passage, section_key, sentences
from dlforge.rag.retrieve import Retriever
from dlforge.rag.sqlite_store import open_store
from dlforge.rag.tune import _embed, _pad, train, tune_index

# Several sections, each of several sentences, and two overlapping-topic documents: enough pairs for small batches.
DOCS = {
    "garden.md": "# Garden\n\n## Roses\n\nRoses need full sun for at least six hours. Prune the roses in late "
                 "winter before new growth starts. Feed them with compost every spring and water at the base.\n\n"
                 "## Tomatoes\n\nTomatoes grow best in warm soil above fifteen degrees. Stake the plants early so "
                 "the stems do not break. Pick the fruit when it is evenly red and slightly soft.\n",
    "kitchen.md": "# Kitchen\n\n## Bread\n\nBread dough rises faster in a warm room near the oven. Knead the dough "
                  "for ten minutes until it is smooth. Bake the loaf until it sounds hollow when tapped.\n\n"
                  "## Soup\n\nTomato soup needs ripe tomatoes, onions and a little sugar. Simmer the soup for half "
                  "an hour before blending. Season it with salt and pepper at the very end.\n",
    "bikes.txt": "Check the tyre pressure of the bike before every long ride. Oil the chain once a month and wipe "
                 "off the extra oil. Replace the brake pads when the grooves are worn away.\n",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    model = tiny_st_model(root / "tiny")
    docs = write_files(root / "docs", DOCS)
    index_folder(docs, root / "base.db", model=str(model), chunk_tokens=40, chunk_overlap=4)
    return root, docs, model


def test_sentences_and_passages():
    text = "One two three four five. Short one.\n\nSix seven eight nine ten eleven!"
    assert sentences(text) == [("One two three four five.", "One two three four five."),
                               ("Six seven eight nine ten eleven!", "Six seven eight nine ten eleven!")]
    record = {"heading": ["Garden", "Roses"], "text": "Roses\n\nRoses need sun.", "title": "g"}
    assert passage(record) == "Garden\n\nRoses\n\nRoses need sun."  # its own heading is in its text already
    assert passage({**record, "text": "## Roses\n\nRoses need sun."}) == "Garden\n\n## Roses\n\nRoses need sun."
    assert passage({**record, "text": "Prune in winter."}) == "Garden > Roses\n\nPrune in winter."
    assert passage({"heading": [], "text": "x y", "title": "Doc"}) == "Doc\n\nx y"


def test_mined_pairs_never_use_their_own_section_as_a_negative(built):
    root, _, model = built
    with open_store(root / "base.db") as store:
        records = {r["chunk_id"]: r for r in store.records(store.chunk_ids())}
        pairs = mine_pairs(store, load_embedder(str(model)), per_chunk=3, seed=1)
        again = mine_pairs(store, load_embedder(str(model)), per_chunk=3, seed=1)
    assert pairs == again and len(pairs) >= 10  # seeded
    removed = 0
    for p in pairs:
        own = records[p.chunk]
        assert p.query in " ".join(own["text"].split())  # a sentence of its own chunk
        removed += p.query not in " ".join(p.positive.split())
        assert p.negative_chunk is not None and p.negative_chunk != p.chunk
        assert section_key(records[p.negative_chunk]) != section_key(own)
        assert p.negative == passage(records[p.negative_chunk])
    assert removed >= 0.6 * len(pairs)  # nine in ten lose their sentence (seeded: a fixed share)


def test_training_lowers_the_contrastive_loss(built):
    root, _, model = built
    embedder = load_embedder(str(model))
    with open_store(root / "base.db") as store:
        pairs = mine_pairs(store, embedder, per_chunk=3)
    import copy

    bert = copy.deepcopy(embedder.inner.model)
    before = [t.clone() for t in bert.parameters()]
    losses = train(bert, embedder.inner.tokenizer, pairs, epochs=6, batch_size=4, lr=3e-3, seed=0)
    assert len(losses) == 6 * (len(pairs) // 4)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert any(not (a == b).all() for a, b in zip(before, bert.parameters(), strict=True))
    assert all((a == b).all() for a, b in zip(before, embedder.inner.model.parameters(), strict=True))  # a copy


def test_texts_embedded_in_length_groups_equal_one_padded_batch_and_keep_their_order(built):
    import torch

    _, _, model = built
    embedder = load_embedder(str(model))
    bert, tokenizer = embedder.inner.model.eval(), embedder.inner.tokenizer
    texts = ["roses", "prune the roses in late winter before new growth starts " * 3, "soup", "bread dough rises",
             "check the tyre pressure of the bike before every long ride", "x"]
    ids = [[tokenizer.cls_id, *x, tokenizer.sep_id] for x in tokenizer.encode_batch(texts)]
    with torch.no_grad():
        whole = bert.embed(*_pad(tokenizer, ids))  # all six padded to the longest
        grouped = _embed(bert, tokenizer, texts, 256, group=2)  # three groups, sorted by length, put back
    assert torch.allclose(grouped, whole, atol=1e-5)
    grouped = _embed(bert, tokenizer, texts, 256, group=2)
    grouped[1].sum().backward()  # the gradient reaches the weights through the regrouping
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bert.parameters())
    bert.zero_grad(set_to_none=True)


def test_tune_builds_a_new_index_with_its_own_fingerprint(built):
    root, docs, model = built
    base = root / "base.db"
    with open_store(base, writer=True) as store:
        store.update_settings("fusion", {"keyword_weight": 0.4})
        before = store.settings()
        base_vectors = store.vectors(store.chunk_ids())
    questions = root / "q.jsonl"
    questions.write_text(json.dumps({"question": "when do I prune roses", "gold": ["garden.md"]}) + "\n")
    report = tune_index(docs, base, root / "tuned.db", epochs=1, batch_size=4, lr=1e-3, per_chunk=3,
                        questions=questions)
    assert report.pairs >= 10 and report.steps == report.pairs // 4 and report.chunks > 0
    assert set(report.evaluation) == {"before", "after"} and "recall@5" in report.evaluation["after"]["dense"]
    with open_store(base) as store:  # the old index is as it was
        assert store.settings() == before
        assert np.array_equal(store.vectors(store.chunk_ids()), base_vectors)
    tuned_model = root / "tuned.db.embedder"
    with open_store(root / "tuned.db") as store:
        settings = store.settings()
        assert settings["fusion"] == {"keyword_weight": 0.4} and settings["tuned"]["pairs"] == report.pairs
        tuned = load_embedder(str(tuned_model))
        assert settings["embedder"]["fingerprint"] == tuned.fingerprint() != before["embedder"]["fingerprint"]
        records = store.records(store.chunk_ids())
        with Retriever(store, tuned) as r:  # the tuned model's vectors are the ones stored
            hits = r.search(records[0]["text"], k=1, mode="dense")
            assert hits[0]["similarity"] > 0.95
    about = json.loads((tuned_model / "tune.json").read_text())
    assert about["base"]["fingerprint"] == before["embedder"]["fingerprint"] and about["steps"] == report.steps
    with pytest.raises(DataError, match="fingerprint|different|built with"):
        Retriever(open_store(root / "tuned.db"), load_embedder(str(model)))  # the base model is refused
    with pytest.raises(ConfigError, match="exists"):
        tune_index(docs, base, root / "tuned.db", batch_size=4)
    with pytest.raises(ConfigError, match="another file"):
        tune_index(docs, base, base)
