"""dlforge's BERT against transformers (random small models in every head layout, and the real all-MiniLM-L6-v2
weights) and against sentence-transformers' embeddings."""

from __future__ import annotations

import pytest
import torch
import transformers  # the reference implementation (the dev extra)

from dlforge.errors import CheckpointError
from dlforge.llm.bert_weights import load_hf_bert

SMALL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12)


def reference(cls, tmp_path, safetensors: bool = True, **config):
    """A randomly initialized transformers model of the small config, saved to and returned with its folder."""
    torch.manual_seed(0)
    model = cls(transformers.BertConfig(**{**SMALL, **config})).eval()
    with torch.no_grad():  # random LayerNorm scales and biases too, so any mix-up between weights shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p) if "LayerNorm.weight" in name else 0.5 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=safetensors)
    return model


def padded_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[2, 4:] = 0, 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids * mask, mask, types


@pytest.mark.parametrize("safetensors", [True, False])
def test_encoder_hidden_states_match_bert_model(tmp_path, safetensors):
    ref = reference(transformers.BertModel, tmp_path, safetensors=safetensors, attn_implementation="eager")
    ours = load_hf_bert(tmp_path)  # model.safetensors, or pytorch_model.bin read with weights_only=True
    assert ours.config.head == "none"
    ids, mask, types = padded_batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours.encode(ids, mask, types)
    real = mask.bool()  # padding positions are not meaningful on either side
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


def test_masked_lm_logits_and_loss_match_bert_for_masked_lm(tmp_path):
    ref = reference(transformers.BertForMaskedLM, tmp_path)
    ours = load_hf_bert(tmp_path)
    assert ours.config.head == "mlm" and ours.head.decoder.weight is ours.embeddings.tokens.weight
    ids, mask, types = padded_batch(1)
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        got = ours({"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels})
    real = mask.bool()
    torch.testing.assert_close(got.logits[real], expected.logits[real], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_classifier_logits_loss_and_gradients_match_bert_for_sequence_classification(tmp_path):
    ref = reference(transformers.BertForSequenceClassification, tmp_path, num_labels=3, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    ours = load_hf_bert(tmp_path)
    assert ours.config.head == "classifier" and ours.config.num_classes == 3
    ids, mask, types = padded_batch(2)
    y = torch.tensor([0, 2, 1])
    ref.train()
    ours.train()  # dropout 0: training mode computes the same, and gradients can be compared
    expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=y)
    got = ours({"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "y": y})
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    expected.loss.backward()
    got.loss.backward()
    attn = ref.bert.encoder.layer[0].attention.self
    ref_qkv = torch.cat([attn.query.weight.grad, attn.key.weight.grad, attn.value.weight.grad])
    torch.testing.assert_close(ours.blocks[0].attn.qkv.weight.grad, ref_qkv, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.embeddings.tokens.weight.grad, ref.bert.embeddings.word_embeddings.weight.grad,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.head.pooler.weight.grad, ref.bert.pooler.dense.weight.grad, atol=1e-5, rtol=1e-4)


def test_loading_refuses_what_it_cannot_place(tmp_path):
    reference(transformers.BertModel, tmp_path)
    with pytest.raises(CheckpointError, match="has no classifier weights"):
        load_hf_bert(tmp_path, head="classifier")
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_act": "relu", "vocab_size": 9}')
    with pytest.raises(CheckpointError, match=r"config\.json: hidden_act 'relu' is not supported"):
        load_hf_bert(tmp_path)


def test_a_pickle_that_is_more_than_tensors_is_refused_in_one_line(tmp_path, capsys):
    """torch.load(weights_only=True) refuses it with a long message that advises weights_only=False: dlforge says
    what the file is in one line, without that advice (BERT and GPT-2 folders alike)."""
    import collections

    from dlforge.cli.main import main
    from dlforge.llm.gpt2 import load_gpt2

    model = reference(transformers.BertModel, tmp_path / "bert")
    (tmp_path / "bert" / "model.safetensors").unlink()
    torch.save({**model.state_dict(), "hook": print}, tmp_path / "bert" / "pytorch_model.bin")
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcd"]))
    (tmp_path / "text.txt").write_text("abc\n")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: holds Python objects besides tensors "
                                              r"\(print\)") as refused:
        load_hf_bert(tmp_path / "bert")
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["embed", str(tmp_path / "bert"), "--input", str(tmp_path / "text.txt"), "--out", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.splitlines()) == 1 and "weights_only" not in err, err
    transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=8).save_pretrained(tmp_path / "g")
    for content, message in [({"state": {"wte": torch.zeros(2)}, "counts": collections.Counter(a=1)},
                               r"pytorch_model\.bin: expected a state dict of tensors, found 'state': a dict"),
                              (b"not a pickle at all",
                               r"pytorch_model\.bin: not a PyTorch file of tensors \(Unsupported operand")]:
        if isinstance(content, bytes):
            (tmp_path / "g" / "pytorch_model.bin").write_bytes(content)
        else:
            torch.save(content, tmp_path / "g" / "pytorch_model.bin")
        for load in (load_gpt2, load_hf_bert):
            folder = tmp_path / ("g" if load is load_gpt2 else "bert")
            (folder / "pytorch_model.bin").write_bytes((tmp_path / "g" / "pytorch_model.bin").read_bytes())
            with pytest.raises(CheckpointError, match=message):
                load(folder)


# --- the real weights: all-MiniLM-L6-v2 ------------------------------------------------------------------------------

SENTENCES = [
    "To be, or not to be, that is the question.",
    "A rose by any other name would smell as sweet.",
    "Hi",
    "The quick brown fox jumps over the lazy dog, and the dog, unbothered, sleeps on in the afternoon sun.",
    "Debian is a free operating system; how do I upgrade from one release to the next?",
    " ".join(["All the world's a stage, and all the men and women merely players."] * 30),  # > 256 tokens: cut
]


def test_minilm_hidden_states_match_transformers_within_1e_4(minilm):
    tok = minilm.embedder.tokenizer
    rows = [[tok.cls_id, *x[:62], tok.sep_id] for x in tok.encode_batch(SENTENCES)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        expected = minilm.hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = minilm.embedder.model.encode(ids, mask)
    assert (mask == 0).any()  # the batch is padded
    err = (got - expected)[mask.bool()].abs().max().item()
    assert err < 1e-4, err


def test_minilm_sentence_embeddings_match_sentence_transformers(minilm):
    expected = torch.from_numpy(minilm.st.encode(SENTENCES, batch_size=4))
    got = torch.from_numpy(minilm.embedder.embed(SENTENCES, batch_size=4))
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    assert cosine.min().item() >= 0.9999, cosine
    assert got.shape == (len(SENTENCES), 384)
