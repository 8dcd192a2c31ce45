"""The README's commands and snippets, run as tests: what it promises is what happens."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clitools import run_cli, run_here

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_two_commands():
    first = blocks("bash")[0]
    assert first.lstrip().startswith("make demo") and "make test" in first


def test_python_snippet_runs(tmp_path, monkeypatch, capsys):
    import dlforge.train.optim as optim  # the subpackage imported first must not hide the function dlforge.train
    import dlforge.train.trainer  # noqa: F401

    assert optim.build_optimizer
    monkeypatch.chdir(tmp_path)
    snippet = next(b for b in blocks("python") if "dlforge.train(" in b)
    exec(compile(snippet, "README.md", "exec"), {})
    out = capsys.readouterr().out.split()
    assert (tmp_path / "runs").is_dir() and float(out[1]) > 0.8  # iris test accuracy


def test_embedding_snippet_runs():
    import numpy as np

    snippet = next(b for b in blocks("python") if "load_sentence_embedder" in b)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    vectors = scope["vectors"]
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_quoted_config_error_is_what_the_cli_prints(tmp_path):
    text = blocks("text")[0]
    cmd, expected = text.splitlines()[0].removeprefix("$ dlforge ").split(), text.splitlines()[1]
    proc = run_cli(*cmd, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == expected


def test_yaml_example_validates(tmp_path):
    import yaml

    from dlforge.config import load_config

    raw = yaml.safe_load(blocks("yaml")[0])
    cfg = load_config(raw)
    assert cfg.data["target"] == "churned" and cfg.train.early_stopping.metric == "val/f1"


# --- the shell commands, one by one, in a fresh git checkout --------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
# What is not run, with the reason; everything else in the README's bash blocks runs, in order. Whole sections whose
# data takes long to build even for one training step on 16 samples (tests/test_presets.py smoke-runs their presets,
# tests/rag and tests/llm run their commands):
SKIPPED_SECTIONS = {
    "BERT": "masked-LM and genre data: WordPiece and MiniLM over every play (~30 s)",
    "Translation": "pairs the verses of two Bibles and trains their BPE (~20 s)",
    "Questions over your documents (RAG)": "embeds the whole Debian FAQ with MiniLM (~20 s)",
}
SKIPPED = {  # commands, by a part of their line
    "make ": "installs into .venv, or runs this very suite",
    "torchrun ": "four training processes; tests/train/test_ddp.py runs DDP",
    "scripts/studies/": "each trains several models and rewrites its page in docs/results/ (make results-lm)",
    "lm perplexity": "two GPTs over the whole validation split of two corpora (~30 s)",
    "--type wordpiece": "WordPiece over the whole Bible (~6 s)",
    "gpt-bible-scratch": "the data of gpt-bible-adapt, run just before, from random weights (~8 s)",
    "train fashion-ddpm": "its report samples 64 images in 50 steps (~15 s); tests/test_presets.py runs it",
    "sample latest:fashion-ddpm": "needs the fashion-ddpm run above; tests/tasks/test_generation.py samples one",
    "prune latest": "fine-tunes a pruned copy for 1500 steps, then times both; tests/deploy/test_prune.py runs it",
    "quantize latest": "calibrates, evaluates and times two graphs (~10 s); tests/deploy/test_quantize.py runs it",
    "dlforge serve ": "serves until stopped; tests/deploy/test_serve*.py run the server on a loopback port",
    "dlforge ui": "serves until stopped; tests/deploy/test_ui*.py serve the page and drive it in Chromium",
}
SHORT_TRAIN = ["train.max_steps=1", "train.max_epochs=null", "train.warmup_steps=0", "train.progress=false",
               "train.tensorboard=false", "train.eval_every=1", "train.checkpoint_every=1", "data.limit=16"]
SHORTER = {"--max-new-tokens": "5"}  # options whose value is cut down


def shell_commands() -> list[tuple[str, list[str]]]:
    """(section, command) for every command line of the README's bash blocks, split as a shell would."""
    commands, section, fence = [], "", None
    for line in README.splitlines():
        if fence is None and line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
        elif fence == "bash" and shlex.split(line, comments=True):
            commands.append((section, shlex.split(line, comments=True)))
    return commands


def shortened(argv: list[str]) -> list[str]:
    argv = [SHORTER.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    if argv[:2] == ["dlforge", "train"]:
        argv += SHORT_TRAIN
    return argv


def write_inputs(root: Path) -> list[str]:
    """The files the README's commands take as given (a CSV of new rows, images, a GPT-2 folder...); returns their
    names, to be ignored like a user's own files."""
    import numpy as np
    import statsmodels.api as sm
    import transformers
    from PIL import Image
    from vega_datasets import local_data

    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    ages, spend = rng.integers(18, 80, 120), rng.normal(50, 20, 120).round(2)
    plans = rng.choice(["basic", "pro"], 120)
    rows = [f"{a},{s},{p},{int(s > 50)}" for a, s, p in zip(ages, spend, plans, strict=True)]
    (root / "data" / "customers.csv").write_text("age,spend,plan,churned\n" + "\n".join(rows) + "\n")
    (root / "my-experiment.yaml").write_text(blocks("yaml")[0])
    (root / "new_rows.csv").write_text("age,spend,plan\n34,61.5,pro\n52,12.0,basic\n")
    (root / "shirts").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(root / "shirts" / f"shirt{i}.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "photo.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "scan.png")
    (root / "prompts.txt").write_text("ROMEO:\nJULIET:\n")
    co2 = sm.datasets.co2.load_pandas().data.interpolate().tail(120)  # a forecaster's recent values, real ones
    co2.rename_axis("date").reset_index().to_csv(root / "recent.csv", index=False)
    local_data.seattle_weather().tail(20).to_csv(root / "days.csv", index=False)  # a sequence model's recent days
    config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(root / "my-gpt2")
    return ["data/", "my-experiment.yaml", "new_rows.csv", "shirts/", "photo.png", "scan.png", "prompts.txt",
            "recent.csv", "days.csv", "my-gpt2/"]


def run_command(argv: list[str], cwd: Path, capsys) -> subprocess.CompletedProcess:
    argv = [m for a in argv for m in (sorted(glob.glob(a, root_dir=cwd)) or [a] if "*" in a else [a])]
    if argv[0] == "dlforge":
        return run_here(capsys, *argv[1:])
    assert argv[0] == "python", argv
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_readme_commands_run_in_order_and_write_only_into_the_workspace(tmp_path, monkeypatch, capsys):
    """Every command of the README, from a fresh checkout, with training shortened (1 step on 16 samples) and
    generation cut short: each exits 0, and afterwards git sees no change outside ignored paths (the workspace)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(checkout)]
    shutil.copy(ROOT / "README.md", checkout)
    shutil.copy(ROOT / ".gitignore", checkout)
    shutil.copytree(ROOT / "scripts", checkout / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "the checkout"], check=True)
    inputs = write_inputs(checkout)
    (checkout / ".git" / "info" / "exclude").write_text("\n".join(f"/{name}" for name in inputs) + "\n")
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))

    ran, timings = 0, []
    for section, argv in shell_commands():
        line = " ".join(argv)
        if section in SKIPPED_SECTIONS or any(marker in line for marker in SKIPPED):
            continue
        start = time.process_time()
        proc = run_command(shortened(argv), checkout, capsys)
        timings.append((round(time.process_time() - start, 1), line[:90]))
        assert proc.returncode == 0, f"{line}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ran += 1
    print("\n".join(f"{s:6.1f} s  {line}" for s, line in sorted(timings, reverse=True)))  # CPU time, with -s
    assert ran >= 40
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status == "", f"the README's commands wrote outside the workspace:\n{status}"
    assert (checkout / "runs" / "tokenizers" / "shakespeare-bpe4096" / "tokenizer.json").is_file()
    assert (checkout / "runs" / "merged").is_dir() and (checkout / "runs" / "exports" / "my-gpt2-gpt2").is_dir()
