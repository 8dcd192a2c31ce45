"""ONNX export of every registered model, generated from the registry: each family exports with a dynamic batch and
onnxruntime gives PyTorch's outputs within 1e-4 on a batch size it was never traced at; a family that can't be exported
is refused in one line that says why, before anything is written."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dlforge.deploy.onnx_export import TOLERANCE, ExportError, SignatureGraph, export_onnx
from dlforge.registry import create_model, list_models

TARGET_KEYS = ("y", "labels", "naive")
# Fewer layers and narrower widths where a default is large: the same module code, exported in seconds. Export time
# follows the number of ops in the graph, not the number of weights. The graphs here skip onnxscript's optimizer (a
# third of the time); the exports of real runs (test_onnx_run.py) go through it.
SMALL = {
    "gpt2": {"n_layers": 1, "dim": 64, "n_heads": 2, "vocab_size": 128, "context": 32},
    "transformer_base": {"encoder_layers": 1, "decoder_layers": 1, "dim": 64, "n_heads": 2, "ffn_hidden": 128},
    "transformer_seq2seq": {"encoder_layers": 1, "decoder_layers": 1},
    "minilm_l6": {"n_layers": 1, "dim": 64, "n_heads": 2, "ffn_hidden": 128, "vocab_size": 512},
    "bert_classifier": {"n_layers": 1},
    "bert_mlm": {"n_layers": 1},
    "gpt": {"n_layers": 1},
    "gpt_rope": {"n_layers": 1},
    "vit": {"n_layers": 1},
    "vit_tiny": {"n_layers": 1},
    "resnet18": {"layers": [1, 1, 1, 1]},
    "resnet34": {"layers": [1, 1, 1, 1]},
    "resnet50": {"layers": [1, 1, 1, 1]},
    "efficientnet_b0_small": {"depth_mult": 0.25},
    "efficientnet_small_scaled": {"depth_mult": 0.25},
}


def _inputs(model: torch.nn.Module, n: int, seed: int) -> dict[str, torch.Tensor]:
    batch = model.example_batch(n, generator=torch.Generator().manual_seed(seed))
    return {k: v for k, v in batch.items() if k not in TARGET_KEYS}


def _signature(inputs: dict[str, torch.Tensor]) -> dict:
    return {"task": "any", "inputs": [{"name": k, "dtype": str(v.dtype), "shape": [-1, *v.shape[1:]]}
                                      for k, v in inputs.items()],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1]}]}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_or_says_why_not(name, tmp_path, one_thread):
    torch.manual_seed(0)
    model = create_model(name, **SMALL.get(name, {})).eval()
    traced, checked = _inputs(model, 2, 0), _inputs(model, 5, 1)
    out = tmp_path / "onnx"
    refusal = getattr(model, "export_refusal", None)
    if refusal:
        with pytest.raises(ExportError) as err:
            export_onnx(model, _signature(traced), [traced, checked], out, optimize=False)
        assert str(err.value) == f"{name} can't be exported to ONNX: {refusal}" and "\n" not in str(err.value)
        assert not out.exists()
        return
    report = export_onnx(model, _signature(traced), [traced, checked], out, optimize=False)
    assert report["max_abs_diff"] <= TOLERANCE
    assert [c["shapes"] for c in report["checks"]] == [{k: list(v.shape) for k, v in b.items()}
                                                        for b in (traced, checked)]
    # on its own, at a third batch size: onnxruntime against PyTorch
    third = _inputs(model, 3, 2)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(third)
    (got,) = session.run(["logits"], {k: v.numpy() for k, v in third.items()})
    with torch.no_grad():
        (want,) = SignatureGraph(model, list(third), ["logits"])(*third.values())
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=TOLERANCE)


def test_seq2seq_encoder_and_decoder_step_graphs_decode_as_the_model_does(tmp_path, one_thread):
    """encoder_model.onnx once, then decoder_with_past_model.onnx fed its own presents token by token: the logits of
    the model's own cached decoding (`start_decoding`) at every step, within 1e-4."""
    from dlforge.deploy.onnx_decoder import DECODER_FILE, ENCODER_FILE, is_encoder_decoder, seq2seq_graphs

    torch.manual_seed(0)
    model = create_model("transformer_seq2seq", encoder_layers=1, decoder_layers=2).eval()
    assert is_encoder_decoder(model) and not is_encoder_decoder(create_model("gpt", n_layers=1))
    examples = [_inputs(model, 2, 0), _inputs(model, 5, 1)]
    report = export_onnx(model, _signature(examples[0]), examples, tmp_path, extra=seq2seq_graphs(model, examples),
                         optimize=False)
    assert all(report["graphs"][f]["max_abs_diff"] <= TOLERANCE for f in (ENCODER_FILE, DECODER_FILE))
    encoder, decoder = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
                        for f in (ENCODER_FILE, DECODER_FILE))
    source = _inputs(model, 3, 2)
    source = {"input_ids": source["input_ids"].numpy(), "attention_mask": source["attention_mask"].numpy()}
    (memory,) = encoder.run(["memory"], source)
    layers, c = model.config.decoder_layers, model.config
    past = {f"past_{k}_{i}": np.zeros((3, c.n_heads, 0, c.dim // c.n_heads), np.float32) for i in range(layers)
            for k in ("key", "value")}
    names = ["logits"] + [f"present_{k}_{i}" for i in range(layers) for k in ("key", "value")]
    state = model.start_decoding(torch.from_numpy(source["input_ids"]), torch.from_numpy(source["attention_mask"]))
    ids = torch.full((3, 1), c.bos_id)
    with torch.no_grad():
        for _ in range(6):
            want = state.step(ids)  # (B, V): the last position's logits
            got = decoder.run(names, {"decoder_input_ids": ids.numpy(), "memory": memory,
                                      "attention_mask": source["attention_mask"], **past})
            np.testing.assert_allclose(got[0][:, -1], want.numpy(), rtol=0, atol=TOLERANCE)
            ids = want.argmax(-1, keepdim=True)
            past = {n.replace("present", "past"): v for n, v in zip(names[1:], got[1:], strict=True)}
    assert past["past_key_0"].shape[2] == state.cache.length == 6
