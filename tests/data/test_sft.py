"""Instruction tuning: chat templates rendered as transformers renders them, the loss masked on the prompt, JSONL
errors, and an SFT run end to end (init_from a base, the template stored with the tokenizer, --chat)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dlforge import api
from dlforge.data.sft import SFTConfig, read_conversations, sft_jsonl
from dlforge.errors import DataError
from dlforge.llm.chat import chat
from dlforge.llm.generate import load_language_model
from dlforge.registry import create_model
from dlforge.text.chat import DEFAULT_CHAT_TEMPLATE, chat_segments, encode_chat, render_chat
from dlforge.text.tokenizer import train_tokenizer, with_chat_template
from tests.clitools import ok_json, run_together

CONVERSATIONS = [
    [{"role": "user", "content": "Who speaks first in Hamlet?"}, {"role": "assistant", "content": "BERNARDO"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What kind of play is Hamlet?"},
     {"role": "assistant", "content": "a tragedy"}, {"role": "user", "content": "And Twelfth Night?"},
     {"role": "assistant", "content": "a comedy"}],
    [{"role": "user", "content": "Ünïcode — «quotes» and \"escapes\"\n?"}],
]
CHATML = """{% for message in messages %}
    {{ '<|im_start|>' + message['role'] + '\n' }}
    {% generation %}{{ message['content'] | trim }}{% endgeneration %}
    {{ '<|im_end|>' + '\n' }}
    {% if loop.last and message['role'] == 'user' %}{{ '[' + (messages | length) | string + ']' }}{% endif %}
{% endfor %}
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""
QA = [("Who speaks first in Hamlet?", "BERNARDO"), ("Who speaks first in Macbeth?", "First Witch"),
      ("What kind of play is Othello?", "a tragedy"), ("Which play is ROMEO from?", "Romeo and Juliet")]


@pytest.fixture(scope="module")
def tok():
    texts = ["Who speaks first in the play? Answer: the king and queen of love and war, a tragedy, a comedy."] * 20
    return with_chat_template(train_tokenizer(texts, "bpe", vocab_size=300), DEFAULT_CHAT_TEMPLATE)


def write_qa(path, pairs=QA, repeat: int = 1):
    lines = [json.dumps({"prompt": q, "completion": a, "template": "t"}) for q, a in pairs] * repeat
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- templates -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [DEFAULT_CHAT_TEMPLATE, CHATML], ids=["default", "chatml"])
def test_rendering_equals_transformers_apply_chat_template(tok, template, tmp_path):
    from transformers import AutoTokenizer

    t = with_chat_template(tok, template)
    t.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.chat_template == template
    for messages in CONVERSATIONS:
        for generation_prompt in (False, True):
            ours = render_chat(t, messages, add_generation_prompt=generation_prompt)
            theirs = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
            assert ours == theirs


def test_template_errors_are_data_errors(tok):
    with pytest.raises(DataError, match="unknown role tool"):
        render_chat(tok, [{"role": "tool", "content": "x"}])
    with pytest.raises(DataError, match="no chat template"):
        render_chat(with_chat_template(tok, None), CONVERSATIONS[0])


def test_segments_learn_every_assistant_turn_and_nothing_else(tok):
    pieces = chat_segments(tok, CONVERSATIONS[1])
    assert "".join(text for text, _ in pieces) == render_chat(tok, CONVERSATIONS[1])
    assert [text for text, learned in pieces if learned] == [" a tragedy<|endoftext|>", " a comedy<|endoftext|>"]
    assert all("Question:" in text or "Be brief" in text for text, learned in pieces if not learned)


def test_prompt_tokens_are_what_generation_feeds_the_model(tok):
    """Training encodes the prompt and the answer apart; chat() encodes the rendered prompt whole: same tokens."""
    for messages in CONVERSATIONS[:2]:
        ids, learned = encode_chat(tok, messages)
        first_answer = learned.index(True)
        prompt = render_chat(tok, messages[: messages.index(next(m for m in messages if m["role"] == "assistant"))],
                             add_generation_prompt=True)
        assert ids[:first_answer] == tok.encode(prompt)
        assert ids == tok.encode(render_chat(tok, messages))  # the pieces' boundaries split no token


# --- data and loss masking -----------------------------------------------------------------------------------------


def sft_data(tok, tmp_path, path=None, **config):
    folder = tmp_path / "tok"
    with_chat_template(tok, None).save(folder)
    path = path or write_qa(tmp_path / "qa.jsonl")
    return sft_jsonl(SFTConfig(name="sft_jsonl", path=str(path), tokenizer=str(folder), **config))


def test_labels_are_the_answer_tokens_only(tok, tmp_path):
    data = sft_data(tok, tmp_path, val_fraction=0.0)
    assert data.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE  # added to the base tokenizer (a new hash)
    assert data.tokenizer.hash != with_chat_template(tok, None).hash
    batch = data.train.__getitems__(list(range(len(QA))))
    for row, (question, answer) in enumerate(QA):
        labels = batch["labels"][row]
        learned = labels[labels != -100].tolist()
        assert learned == tok.encode(" " + answer) + [tok.eos_id]
        n_prompt = len(tok.encode(f"Question: {question}\nAnswer:"))
        assert (labels[: n_prompt - 1] == -100).all()
        assert labels[n_prompt - 1] != -100  # the prompt's last position predicts the first answer token
        n = int(batch["attention_mask"][row].sum())
        assert (labels[n:] == -100).all() and (batch["attention_mask"][row, n:] == 0).all()  # right padding


def test_loss_is_cross_entropy_over_the_answers_alone(tok, tmp_path):
    """The padded batch's loss equals the mean negative log-likelihood of the answer tokens (end-of-text included),
    each computed on its conversation alone, unpadded, from the token ids."""
    data = sft_data(tok, tmp_path, val_fraction=0.0)
    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=tok.vocab_size, context=64, dim=32, n_layers=2, n_heads=2).eval()
    batch = data.train.__getitems__(list(range(len(QA))))
    with torch.no_grad():
        loss = model(batch).loss
        nll = []
        for question, answer in QA:
            prompt = tok.encode(f"Question: {question}\nAnswer:")
            ids = prompt + tok.encode(" " + answer) + [tok.eos_id]
            logits = model({"input_ids": torch.tensor([ids[:-1]])}).logits[0]  # (T, V)
            logp = F.log_softmax(logits.float(), dim=-1)
            nll += [-logp[j - 1, ids[j]] for j in range(len(prompt), len(ids))]
    assert torch.allclose(loss, torch.stack(nll).mean(), atol=1e-5)


def test_prompt_positions_cannot_change_the_loss(tok, tmp_path):
    data = sft_data(tok, tmp_path, val_fraction=0.0)
    batch = data.train.__getitems__(list(range(len(QA))))
    model = create_model("gpt", vocab_size=tok.vocab_size, context=64, dim=32, n_layers=2, n_heads=2)
    logits = model(batch).logits.detach().requires_grad_(True)  # (B, T, V)
    labels = batch["labels"]
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    masked = labels == -100
    assert masked.any() and (logits.grad[masked] == 0).all() and (logits.grad[~masked] != 0).any()
    noisy = logits.detach().clone()
    noisy[masked] = torch.randn_like(noisy[masked]) * 100  # anything at all where the prompt (or padding) is
    assert torch.equal(F.cross_entropy(noisy.flatten(0, 1), labels.flatten(), ignore_index=-100), loss.detach())


def test_messages_records_and_truncation(tok, tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATIONS[1]}) + "\n" + json.dumps({"prompt": "Q " * 60,
                                                                                    "completion": "A"}) + "\n")
    n = len(encode_chat(tok, CONVERSATIONS[1])[0])  # n tokens: n - 1 inputs, each with the next token as label
    data = sft_data(tok, tmp_path, path=path, val_fraction=0.0, max_length=n - 1)
    labels = data.train.__getitems__([0])["labels"][0]
    assert labels[labels != -100].tolist() == (tok.encode(" a tragedy") + [tok.eos_id] + tok.encode(" a comedy")
                                               + [tok.eos_id])
    assert data.info["dropped"]["train"] == 1 and len(data.train) == 1  # cut short: no answer left to learn
    data = sft_data(tok, tmp_path, path=path, val_fraction=0.0, max_length=n - 2)
    labels = data.train.__getitems__([0])["labels"][0]  # cut one token short: the last end-of-text is not learned
    assert labels[labels != -100].tolist()[-1] != tok.eos_id and data.info["truncated"]["train"] == 2


@pytest.mark.parametrize("line, message", [
    ("{not json", r":2: invalid JSON"),
    ('{"prompt": "q"}', r":2: completion: expected a string, got NoneType"),
    ('{"prompt": "q", "completion": 3}', r":2: completion: expected a string, got int"),
    ('{"prompt": "q", "completion": "a", "messages": []}', r":2: expected either prompt and completion, or messages"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', r":2: messages\[0\]\.role: expected system, user, assistant"),
    ('{"messages": [{"role": "user", "content": ["x"]}]}', r":2: messages\[0\]\.content: expected a string"),
    ('{"messages": [{"role": "user", "content": "x"}]}', r":2: messages: no assistant message"),
    ('["a list"]', r":2: expected a JSON object"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine", "completion": "yes"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"^{path}{message}"):
        read_conversations(path)


# --- a run ---------------------------------------------------------------------------------------------------------


def test_sft_run_from_a_base_learns_the_answers_and_chat_stops_at_the_end_of_turn(tiny_lm_run, tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl", repeat=4)
    cfg = {"name": "tiny-sft", "runs_dir": str(tmp_path / "runs"),
           "data": {"name": "sft_jsonl", "path": str(qa), "tokenizer": str(tiny_lm_run.run), "max_length": 64,
                    "val_fraction": 0.25},
           "model": {"name": "gpt", "context": 64, "dim": 32, "n_layers": 2, "n_heads": 2},
           "train": {"init_from": str(tiny_lm_run.run), "max_steps": 120, "batch_size": 8, "lr": 1e-2,
                     "progress": False, "tensorboard": False, "eval_every": 120, "checkpoint_every": None}}
    result = api.train(cfg)
    model, tok = load_language_model(result.run_dir)
    base_tok = load_language_model(tiny_lm_run.run)[1]
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE and base_tok.chat_template is None
    assert tok.hash != base_tok.hash and tok.backend.to_str() == base_tok.backend.to_str()  # a new hash, same vocab
    pre = json.loads((result.run_dir / "model" / "preprocessing.json").read_text())
    assert pre["tokenizer_hash"] == tok.hash
    for question, answer in QA:  # memorized: the answer, then the end-of-text token
        reply = chat(model, tok, question, temperature=0.0, max_new_tokens=12)
        assert (reply.completion, reply.stop_reason) == (answer, "eos")
    ev = json.loads((result.run_dir / "eval.json").read_text())
    assert ev["val"]["exact_match"] == 1.0 and ev["answers"]["val"]["by_template"]["t"]["n"] == 4
    questions = tmp_path / "questions.txt"  # `dlforge predict`: each line asked as a chat message
    questions.write_text("".join(f"{question}\n" for question, _ in QA))
    rows = api.predict(result.run_dir, questions)
    assert [(r["prompt"], r["completion"], r["stop_reason"]) for r in rows] == [(q, a, "eos") for q, a in QA]
    assert "prompts.txt`: prompts, one per line" in (result.run_dir / "README.md").read_text()
    procs = run_together({  # one process for the two commands: one start of torch
        "chat": ["generate", str(result.run_dir), "--chat", QA[0][0], "--temperature", "0", "--json"],
        "no-template": ["generate", str(tiny_lm_run.run), "--chat", "hello"]}, cwd=tmp_path)
    out = ok_json(procs["chat"])
    assert out["completion"] == QA[0][1] and out["stop_reason"] == "eos"
    assert out["prompt"] == f"Question: {QA[0][0]}\nAnswer:"
    proc = procs["no-template"]
    assert proc.returncode == 2 and "no chat template" in proc.stderr
