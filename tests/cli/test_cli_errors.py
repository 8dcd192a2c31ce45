"""Every verb, given a wrong path, says so in one line with exit code 2, before any heavy work; --help, usage and
config errors come before torch is imported (issue 13, defects 9, 15 and 19).

The commands run one after the other in one Python process (`run_in_one_process`): a command that fails on its
arguments costs milliseconds there, and the modules each one imported are recorded, so "before any heavy work" is
checked by what was imported, not by a clock.
"""

from __future__ import annotations

import ast
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import ENV, HEAVY_MODULES, one_line_error, run_cli, run_in_one_process

FILE, FOLDER, MISSING = "a-file.txt", "a-folder", "no-such-file.txt"
UNDER_FILE = f"{FILE}/out"  # an output that cannot be written: its folder is a file
RUN = "no-such-run"

# What the line says is wrong
NOT_FOUND, IS_FOLDER, IS_FILE, UNWRITABLE = "not found", "is a folder", "is a file", "cannot be written"
NO_RUN, NOT_RUN, NO_INDEX, NOT_INDEX = "no such run", "not a run folder", "no such index", "not a dlforge RAG index"

# verb -> case -> (arguments after the verb, the path the error line names, what it says of it). Every registered
# command has a row, an empty one for a command without path arguments, so that a new verb cannot be forgotten. The
# cases: a missing file or folder, a folder where a file is expected, a file where a folder is expected, an output
# that cannot be written. Each must fail with one line and exit code 2 before a heavy library is imported.
PATH_CASES: dict[str, dict[str, tuple[list[str], str, str]]] = {
    "train": {"missing config": (["no-such.yaml"], "no-such.yaml", NOT_FOUND),
              "folder as config": ([FOLDER], FOLDER, IS_FOLDER),
              "file as run folder": (["iris-logistic", "--run-dir", FILE], FILE, IS_FILE),
              "unwritable run folder": (["iris-logistic", "--run-dir", UNDER_FILE], UNDER_FILE, UNWRITABLE),
              "missing run to resume": (["--resume", RUN], RUN, NO_RUN)},
    "eval": {"missing run": ([RUN], RUN, NO_RUN), "file as run": ([FILE], FILE, NOT_RUN)},
    "predict": {"missing input": ([RUN, MISSING], MISSING, NOT_FOUND),
                "folder as output": ([RUN, FILE, "--out", FOLDER], FOLDER, IS_FOLDER),
                "unwritable output": ([RUN, FILE, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "models": {}, "datasets": {}, "presets": {},
    "generate": {},  # its run is found as the model loads: see AFTER_TORCH
    "translate": {"missing file": ([RUN, "--file", MISSING], MISSING, NOT_FOUND),
                  "folder as file": ([RUN, "--file", FOLDER], FOLDER, IS_FOLDER)},
    "embed": {"missing input": (["minilm", "--input", MISSING, "--out", "x.npy"], MISSING, NOT_FOUND),
              "folder as input": (["minilm", "--input", FOLDER, "--out", "x.npy"], FOLDER, IS_FOLDER),
              "folder as output": (["minilm", "--input", FILE, "--out", FOLDER], FOLDER, IS_FOLDER),
              "unwritable output": (["minilm", "--input", FILE, "--out", f"{UNDER_FILE}.npy"], UNDER_FILE, UNWRITABLE)},
    "export": {"missing run": ([RUN], RUN, NO_RUN), "file as run": ([FILE], FILE, NOT_RUN),
               "file as output folder": ([RUN, "--out", FILE], FILE, IS_FILE),
               "unwritable output": ([RUN, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "quantize": {"missing run": ([RUN], RUN, NO_RUN), "file as run": ([FILE], FILE, NOT_RUN),
                 "file as output folder": ([RUN, "--out", FILE], FILE, IS_FILE),
                 "unwritable output": ([RUN, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "prune": {"missing run": ([RUN, "--sparsity", "0.5"], RUN, NO_RUN),
              "file as run": ([FILE, "--sparsity", "0.5"], FILE, NOT_RUN)},
    "sample": {"file as output folder": ([RUN, "--out", FILE], FILE, IS_FILE),
               "unwritable output": ([RUN, "--out", f"{UNDER_FILE}.png"], UNDER_FILE, UNWRITABLE)},
    "serve": {"missing run": ([RUN], RUN, NO_RUN), "file as run": ([FILE], FILE, NOT_RUN)},
    "ui": {"file as runs folder": (["--runs-dir", FILE], FILE, "folder"),
           "missing runs folder": (["--runs-dir", MISSING], MISSING, NOT_FOUND)},
    "monitor": {"missing run": ([RUN, "--current", FILE], RUN, NO_RUN),
                "file as run": ([FILE, "--current", FILE], FILE, NOT_RUN)},
    "fairness": {"missing run": ([RUN, "--data", "test", "--sensitive", "g"], RUN, NO_RUN),
                 "file as run": ([FILE, "--data", "test", "--sensitive", "g"], FILE, NOT_RUN),
                 "missing data": ([RUN, "--data", MISSING, "--sensitive", "g"], MISSING, NOT_FOUND),
                 "folder as data": ([RUN, "--data", FOLDER, "--sensitive", "g"], FOLDER, IS_FOLDER)},
    "registry add": {"missing run": ([RUN, "--name", "m"], RUN, NO_RUN), "file as run": ([FILE, "--name", "m"], FILE,
                                                                                      NOT_RUN)},
    "registry list": {"file as runs folder": (["--runs-dir", FILE], FILE, "folder")},
    "registry show": {"file as runs folder": (["m", "--runs-dir", FILE], FILE, "folder")},
    "registry alias": {"file as runs folder": (["m", "champion", "1", "--runs-dir", FILE], FILE, "folder")},
    "registry rollback": {"file as runs folder": (["m", "champion", "--runs-dir", FILE], FILE, "folder")},
    "registry history": {"file as runs folder": (["m", "--runs-dir", FILE], FILE, "folder")},
    "runs list": {"file as runs folder": (["--runs-dir", FILE], FILE, "folder")},
    "runs show": {"missing run": ([RUN], RUN, NO_RUN), "file as run": ([FILE], FILE, NOT_RUN)},
    "runs compare": {"missing run": ([RUN, "other"], RUN, NO_RUN),
                     "folder as output": (["a", "b", "--out", FOLDER], FOLDER, IS_FOLDER),
                     "unwritable output": (["a", "b", "--out", f"{UNDER_FILE}.png"], UNDER_FILE, UNWRITABLE),
                     "output not a png": (["a", "b", "--out", "curves.txt"], "curves.txt", "a .png file")},
    "runs open": {"missing run": ([RUN], RUN, NO_RUN), "file as run": ([FILE], FILE, NOT_RUN)},
    "runs rm": {"missing run": ([RUN], RUN, NO_RUN), "file as run": ([FILE], FILE, NOT_RUN)},
    "runs clean": {"file as runs folder": (["--failed", "--runs-dir", FILE], FILE, "folder")},
    "config schema": {}, "config keys": {},
    "lr-find": {"missing config": (["no-such.yaml"], "no-such.yaml", NOT_FOUND),
                "folder as config": ([FOLDER], FOLDER, IS_FOLDER)},
    "config show": {"missing config": (["no-such.yaml"], "no-such.yaml", NOT_FOUND),
                    "folder as config": ([FOLDER], FOLDER, IS_FOLDER)},
    "image attention": {"missing input": ([RUN, MISSING, "--out", "a.png"], MISSING, NOT_FOUND),
                        "folder as input": ([RUN, FOLDER, "--out", "a.png"], FOLDER, IS_FOLDER),
                        "folder as output": ([RUN, FILE, "--out", FOLDER], FOLDER, IS_FOLDER),
                        "unwritable output": ([RUN, FILE, "--out", f"{UNDER_FILE}.png"], UNDER_FILE, UNWRITABLE)},
    "image ops": {"missing input": ([MISSING, "out.png"], MISSING, NOT_FOUND),
                  "folder as input": ([FOLDER, "out.png"], FOLDER, IS_FOLDER),
                  "folder as output": ([FILE, FOLDER], FOLDER, IS_FOLDER),
                  "unwritable output": ([FILE, f"{UNDER_FILE}.png"], UNDER_FILE, UNWRITABLE)},
    "tokenizer train": {"file as output folder": ([FILE, "--out", FILE, "--overwrite"], FILE, IS_FILE),
                        "unwritable output": ([FILE, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "tokenizer encode": {"missing tokenizer": ([MISSING, "hi"], MISSING, NOT_FOUND),
                         "folder without a tokenizer": ([FOLDER, "hi"], FOLDER, "no tokenizer.json")},
    "tokenizer decode": {"missing tokenizer": ([MISSING, "1"], MISSING, NOT_FOUND)},
    "tokenizer report": {"missing tokenizer": ([MISSING, FILE], MISSING, NOT_FOUND)},
    "lm prepare": {"file as output folder": ([FILE, "--tokenizer", "char", "--out", FILE, "--overwrite"], FILE,
                                             IS_FILE),
                   "unwritable output": ([FILE, "--tokenizer", "char", "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "lm import-gpt2": {"missing folder": ([MISSING, "--out", "g"], MISSING, NOT_FOUND),
                       "file as folder": ([FILE, "--out", "g"], FILE, IS_FILE),
                       "unwritable output": ([FOLDER, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "lm export-gpt2": {"file as output folder": ([RUN, "--out", FILE, "--overwrite"], FILE, IS_FILE),
                       "unwritable output": ([RUN, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "lm perplexity": {},  # its runs and corpora are found as they load: see AFTER_TORCH
    "lm merge-lora": {"missing adapter": ([RUN, MISSING, "--out", "m"], MISSING, NOT_FOUND),
                      "file as adapter": ([RUN, FILE, "--out", "m"], FILE, IS_FILE),
                      "unwritable output": ([RUN, FOLDER, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "rag index": {"missing folder": ([MISSING, "--db", "x.db"], MISSING, NOT_FOUND),
                  "file as folder": ([FILE, "--db", "x.db"], FILE, IS_FILE),
                  "folder as index": ([FOLDER, "--db", FOLDER], FOLDER, IS_FOLDER),
                  "unwritable index": ([FOLDER, "--db", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "rag ask": {"missing index": (["q", "--db", MISSING], MISSING, NO_INDEX),
                "folder as index": (["q", "--db", FOLDER], FOLDER, NOT_INDEX)},
    "rag eval": {"missing questions": ([MISSING, "--db", "x.db"], MISSING, NOT_FOUND),
                 "folder as questions": ([FOLDER, "--db", "x.db"], FOLDER, IS_FOLDER)},
    "rag tune": {"missing folder": ([MISSING, "--db", FILE], MISSING, NOT_FOUND),
                 "missing index": ([FOLDER, "--db", MISSING], MISSING, NOT_FOUND),
                 "folder as index": ([FOLDER, "--db", FOLDER], FOLDER, IS_FOLDER),
                 "unwritable tuned index": ([FOLDER, "--db", FILE, "--out", UNDER_FILE], UNDER_FILE, UNWRITABLE)},
    "rag calibrate": {"missing index": (["--db", MISSING], MISSING, NO_INDEX),
                      "folder as index": (["--db", FOLDER], FOLDER, NOT_INDEX)},
    "rag stats": {"missing index": (["--db", MISSING], MISSING, NO_INDEX),
                  "folder as index": (["--db", FOLDER], FOLDER, NOT_INDEX)},
}

# Runs, models and corpora that only the module loading them can find: one line and exit 2 as well, after torch.
AFTER_TORCH: dict[str, tuple[list[str], str]] = {
    "generate: missing run": (["generate", RUN], RUN),
    "generate: file as run": (["generate", FILE], FILE),
    "translate: missing run": (["translate", RUN, "hello"], RUN),
    "embed: misspelt minilm": (["embed", "minilmm", "--input", FILE, "--out", "x.npy"], "did you mean 'minilm'"),
    "tokenizer train: missing corpus": (["tokenizer", "train", MISSING, "--out", "tok"], MISSING),
    "lm prepare: missing corpus": (["lm", "prepare", MISSING, "--tokenizer", "char", "--out", "shards"], MISSING),
    "lm export-gpt2: missing run": (["lm", "export-gpt2", RUN, "--out", "g"], RUN),
    "lm perplexity: missing run": (["lm", "perplexity", RUN, "--corpus", FILE], RUN),
}

LONG = "x" * 300  # longer than a file name may be (255 bytes)
# What must come before torch is imported besides the paths: usage, and every config error but those only a model's or
# dataset's config class can tell (a relation between keys, a custom check): the data and model sections' keys,
# types and bounds are checked from the catalog index (dlforge/catalog_index.py) first
CONFIG_CASES: dict[str, tuple[list[str], str]] = {
    "train without a preset": (["train"], "give a preset"),
    "unknown train key": (["train", "wine-mlp", "train.lrr=1"], "did you mean 'train.lr'"),
    "unknown key in config show": (["config", "show", "wine-mlp", "train.lrr=1"], "train.lrr"),
    "run name too long": (["train", "iris-logistic", f"name={LONG}"], "300 bytes"),
    "preset name too long": (["train", LONG], "no such preset"),
    "run too long a name": (["eval", LONG], "no such run"),
    "tokenizer size not a number": (["lm", "prepare", FILE, "--tokenizer", "bpe:abc", "--out", "s"], "bpe:N"),
    "unknown image op": (["image", "ops", FILE, "out.png", "--op", "blurr"], "unknown image op"),
    "latest of no preset": (["eval", "latest:fashion-pretrain"], "no preset is called that"),
    "empty sentence to translate": (["translate", "any-run", "hello", ""], "sentence 2 is empty"),
    "unknown model key": (["train", "wine-mlp", "model.hiddn=3"], "did you mean 'model.hidden'"),
    "unknown data key": (["train", "wine-mlp", "data.val_fractio=0.1"], "did you mean 'data.val_fraction'"),
    "unknown key of another model": (["train", "wine-mlp", "model.name=gpt", "model.hidden=[8]"], "model.hidden"),
    "model value out of bounds": (["train", "wine-mlp", "model.dropout=2"], "model.dropout: Input should be less"),
    "data value of a wrong type": (["train", "wine-mlp", "data.val_fraction=abc"], "data.val_fraction"),
    "unknown model key in config show": (["config", "show", "gpt-shakespeare-char", "model.dropot=0"], "model.dropout"),
}


def heavy(modules: list[str]) -> list[str]:
    return sorted(HEAVY_MODULES & set(modules))


def registered_commands() -> list[str]:
    """Every command of the typer app, groups walked: "train", "runs list", "lm prepare", ..."""
    import typer.main

    from dlforge.cli.main import app

    def walk(group, prefix: str):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group
                yield from walk(command, f"{prefix}{name} ")
            else:
                yield prefix + name

    return sorted(walk(typer.main.get_command(app), ""))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    d = tmp_path_factory.mktemp("paths")
    (d / FILE).write_text("to be or not to be\n")
    (d / FOLDER).mkdir()
    commands = {f"help: {verb}": [*verb.split(), "--help"] for verb in registered_commands()}
    commands |= {f"usage: {verb}": verb.split() for verb in ("predict", "rag index")}  # a missing argument
    commands |= {f"config: {name}": args for name, (args, _) in CONFIG_CASES.items()}
    commands |= {f"{verb}: {case}": [*verb.split(), *args] for verb, cases in PATH_CASES.items()
                 for case, (args, _, _) in cases.items()}
    commands |= {key: args for key, (args, _) in AFTER_TORCH.items()}  # last: they import torch
    results, startup = run_in_one_process(commands, d)
    return d, results, startup


def test_the_table_has_a_row_for_every_command():
    assert sorted(PATH_CASES) == registered_commands()


def test_a_wrong_path_is_one_line_and_exit_2_before_any_heavy_import(ran):
    d, results, startup = ran
    assert not heavy(startup), f"importing the CLI imports {heavy(startup)}"
    for verb, cases in PATH_CASES.items():
        for case, (_, path, what) in cases.items():
            proc, loaded = results[f"{verb}: {case}"]
            line = one_line_error(proc)
            assert path in line and what in line, f"{verb}, {case}: {line}"
            assert not heavy(loaded), f"{verb}, {case}: imported {heavy(loaded)} before failing: {line}"
    assert sorted(p.name for p in d.iterdir()) == [FILE, FOLDER]  # nothing was written
    assert (d / FILE).read_text() == "to be or not to be\n"


def test_runs_and_corpora_found_as_the_model_loads_are_one_line_too(ran):
    _, results, _ = ran
    for key, (_, named) in AFTER_TORCH.items():
        line = one_line_error(results[key][0])
        assert named in line, f"{key}: {line}"


def test_help_usage_and_config_errors_come_before_torch(ran):
    """Defect 15: `dlforge train` with no arguments took 8 s, a config error 6 s, importing torch first."""
    _, results, _ = ran
    for verb in registered_commands():
        proc, loaded = results[f"help: {verb}"]
        assert proc.returncode == 0 and "Usage:" in proc.stdout, (verb, proc.stderr)
        assert not heavy(loaded), f"{verb} --help imported {heavy(loaded)}"
    for verb in ("predict", "rag index"):
        proc, loaded = results[f"usage: {verb}"]
        assert proc.returncode == 2 and "Missing argument" in proc.stderr, proc.stderr
        assert not heavy(loaded), f"{verb} without arguments imported {heavy(loaded)}"
    for name, (_, fragment) in CONFIG_CASES.items():
        proc, loaded = results[f"config: {name}"]
        line = one_line_error(proc)
        assert fragment in line, f"{name}: {line}"
        assert len(line) < 400, f"{name}: the message repeats too much of the input: {line}"
        assert not heavy(loaded), f"{name}: imported {heavy(loaded)} before failing: {line}"


def test_a_config_error_costs_a_fraction_of_torch_s_import_time(tmp_path):
    """The same as a person sees it, in a process of its own: the CPU time of the whole command (8 s before)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = run_cli("train", "wine-mlp", "train.lrr=1", cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert "did you mean 'train.lr'" in one_line_error(proc)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 3.0, f"{cpu:.1f} s of CPU for a config error"


# --- scripts ---------------------------------------------------------------------------------------------------

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*/*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_runs_its_main_under_the_error_policy(script):
    """A script's DlforgeError was a traceback (scripts/studies/genre_baseline.py: 10 lines)."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    guard = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert len(guard) == 1 and ast.unparse(guard[0].body[0]) == "run_script(main)", ast.unparse(guard[0])


def test_run_script_prints_one_line_and_exits_2(monkeypatch, capsys):
    from dlforge.cli.main import LINE_LIMIT, run_script
    from dlforge.errors import ConfigError

    message = "genre-minilmm: no such preset or YAML file; did you mean 'genre-minilm'?"

    def main() -> None:
        raise ConfigError(message)

    monkeypatch.setattr(sys, "argv", ["genre_baseline.py"])
    with pytest.raises(SystemExit) as exit_:
        run_script(main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    monkeypatch.setattr(sys, "argv", ["genre_baseline.py", "--debug"])
    with pytest.raises(ConfigError):  # --debug: the exception itself, for its traceback
        run_script(main)
    message = "a message\nover two lines, and long" + "g" * 5000  # what no message should be: still one line
    monkeypatch.setattr(sys, "argv", ["genre_baseline.py"])
    with pytest.raises(SystemExit):
        run_script(main)
    err = capsys.readouterr().err
    assert err.startswith("error: a message over two lines") and err.count("\n") == 1 and len(err) <= LINE_LIMIT + 8


def test_genre_baseline_script_with_a_wrong_preset_is_one_line(tmp_path):
    script = next(p for p in SCRIPTS if p.name == "genre_baseline.py")
    proc = subprocess.run([sys.executable, str(script), "--preset", "genre-minilmm"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert "did you mean 'genre-minilm'" in one_line_error(proc)
