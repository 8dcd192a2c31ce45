"""`predict` on every kind of run, from the input that kind of model naturally reads: a forecaster from a CSV of the
series' latest values, a sequence classifier from a CSV of recent days, a language model from a file of prompts;
each model card names that input. (Text classifiers and masked LMs: tests/models/test_bert.py; translation:
tests/llm/test_translate.py; tabular and image runs: tests/cli/test_cli.py, tests/train/test_transfer.py.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from clitools import ok_json, one_line_error, run_here

from dlforge import api
from dlforge.config import load_config
from dlforge.errors import DataError

QUIET = {"progress": False, "tensorboard": False, "checkpoint_every": None, "log_every": 1, "seed": 0}
WINDOW, HORIZON = 8, 3
DAYS = 5  # the sequence classifier's window
PROMPTS = ["the king and", "the fool sings"]


def write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def forecast(tmp_path_factory):
    """A GRU forecaster trained 3 steps on a daily series of 120 rows (date, sales)."""
    d = tmp_path_factory.mktemp("forecast")
    t = np.arange(120)
    days = [str(np.datetime64("2020-01-01") + i) for i in t]
    values = 10 + 0.05 * t + np.sin(2 * np.pi * t / 7)
    series = write_rows(d / "sales.csv", ["date", "sales"], [[day, f"{v:.4f}"] for day, v in zip(days, values,
                                                                                                 strict=True)])
    result = api.train({"name": "sales", "runs_dir": str(d / "runs"),
                        "data": {"name": "timeseries_csv", "path": str(series), "time_column": "date",
                                 "window": WINDOW, "horizon": HORIZON, "season": 7, "test_size": 20, "val_size": 20},
                        "model": {"name": "gru_forecaster", "dim": 8, "n_layers": 1, "residual": True},
                        "train": {"max_steps": 3, "batch_size": 16, **QUIET}})
    return SimpleNamespace(dir=d, run=result.run_dir, days=days, values=values)


@pytest.fixture(scope="module")
def weather(tmp_path_factory):
    """An LSTM trained 3 steps on windows of 5 Seattle days, and a CSV of the first 12 days of the source."""
    from vega_datasets import local_data

    d = tmp_path_factory.mktemp("weather")
    result = api.train({"name": "weather", "runs_dir": str(d / "runs"), "data": {"name": "seattle_weather",
                                                                                "window": DAYS},
                        "model": {"name": "lstm_classifier", "dim": 8, "n_layers": 1},
                        "train": {"max_steps": 3, "batch_size": 16, **QUIET}})
    frame = local_data.seattle_weather().head(12)
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    days = d / "days.csv"
    frame.to_csv(days, index=False)
    return SimpleNamespace(dir=d, run=result.run_dir, days=days, frame=frame)


# --- a forecaster reads the series' latest values ---------------------------------------------------------------------


def test_forecast_gives_the_steps_after_the_last_row_as_the_model_forecast_them_in_training(forecast, tmp_path):
    from dlforge.data.timeseries import unscale_forecast

    cfg = load_config(forecast.run / "config.yaml")
    test = api.build_data(cfg).test.tensors
    origin = int(test["t"][-1])  # the last test sample: its forecast starts at row `origin`
    rows = [[forecast.days[i], f"{forecast.values[i]:.4f}"] for i in range(origin - WINDOW - 4, origin)]
    recent = write_rows(tmp_path / "recent.csv", ["date", "sales"], rows)
    predicted = api.predict(forecast.run, recent)

    model = api.load(forecast.run)
    with torch.no_grad():
        expected = unscale_forecast(model.meta["extra"]["preprocessing.json"], model({"x": test["x"][-1:]}).logits)
    assert [r["step"] for r in predicted] == [1, 2, 3]
    assert [r["time"] for r in predicted] == forecast.days[origin:origin + HORIZON]
    np.testing.assert_allclose([r["sales"] for r in predicted], expected[0, :, 0].numpy(), rtol=1e-5)

    rows_only = write_rows(tmp_path / "values.csv", ["sales"], [[r[1]] for r in rows])  # no dates: consecutive
    assert [{k: v for k, v in r.items() if k != "time"} for r in predicted] == api.predict(forecast.run, rows_only)
    short = write_rows(tmp_path / "short.csv", ["date", "sales"], rows[-WINDOW + 1:])
    with pytest.raises(DataError, match=rf"^{short}: the model reads the last 8 steps of sales to forecast, the file "
                                        r"has 7; give at least 8 rows$"):
        api.predict(forecast.run, short)


# --- a sequence classifier reads recent days -------------------------------------------------------------------------


def test_sequence_classifier_predicts_the_day_after_each_run_of_days(weather, tmp_path):
    rows = api.predict(weather.run, weather.days)
    frame = weather.frame
    assert len(rows) == len(frame) - DAYS + 1
    assert [r["line"] for r in rows] == list(range(DAYS + 1, len(frame) + 2))  # the header is line 1
    next_days = list(frame["date"][DAYS:]) + ["2012-01-13"]
    assert [r["date"] for r in rows] == next_days

    train = api.build_data(load_config(weather.run / "config.yaml")).train.tensors  # sample i: day DAYS + i
    model = api.load(weather.run)
    with torch.no_grad():
        expected = model({"x": train["x"][:len(rows) - 1]}).logits.softmax(-1)
    names = model.meta["extra"]["preprocessing.json"]["label_names"]
    got = torch.tensor([[r[f"p({n})"] for n in names] for r in rows[:-1]])
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)
    assert [r["prediction"] for r in rows[:-1]] == [names[i] for i in expected.argmax(1).tolist()]

    unknown = tmp_path / "unknown.csv"
    unknown.write_text(weather.days.read_text().replace(",sun\n", ",cloudy\n", 1))
    line = 1 + next(i for i, w in enumerate(frame["weather"], start=1) if w == "sun")
    with pytest.raises(DataError, match=rf"^{unknown}:{line}: column 'weather': 'cloudy' was not seen in training; "
                                        r"expected one of drizzle, fog, rain, snow, sun$"):
        api.predict(weather.run, unknown)
    gap = tmp_path / "gap.csv"
    gap.write_text("".join(line for i, line in enumerate(weather.days.read_text().splitlines(True)) if i != 4))
    with pytest.raises(DataError, match=rf"^{gap}:5: column 'date': 2012-01-05 is not the day after 2012-01-03"):
        api.predict(weather.run, gap)


# --- a language model reads prompts ------------------------------------------------------------------------------


def test_language_model_continues_each_prompt_of_a_text_or_jsonl_file(tiny_lm_run, tmp_path):
    from dlforge.llm.generate import generate_batch, load_language_model

    text = tmp_path / "prompts.txt"
    text.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n")
    records = tmp_path / "prompts.jsonl"
    records.write_text(json.dumps({"prompt": PROMPTS[0]}) + "\n" + json.dumps({"text": PROMPTS[1]}) + "\n")
    rows = api.predict(tiny_lm_run.run, text)
    model, tokenizer = load_language_model(tiny_lm_run.run)
    greedy = generate_batch(model, tokenizer, PROMPTS, temperature=0.0)
    assert [(r["line"], r["prompt"]) for r in rows] == [(1, PROMPTS[0]), (3, PROMPTS[1])]
    assert [r["completion"] for r in rows] == [g.completion for g in greedy]
    assert [r["tokens"] for r in rows] == [len(g.tokens) for g in greedy]
    assert [r["completion"] for r in api.predict(tiny_lm_run.run, records)] == [g.completion for g in greedy]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": PROMPTS[0]}) + "\n" + json.dumps({"question": "?"}) + "\n")
    with pytest.raises(DataError, match=rf"^{bad}:2: expected a JSON object with a string field 'prompt' or 'text'"):
        api.predict(tiny_lm_run.run, bad)


# --- the model card names the input, and the command line works on each kind ------------------------------------------


def test_each_model_card_names_the_input_its_predict_reads(forecast, weather, tiny_lm_run):
    cards = {name: (run / "README.md").read_text() for name, run in
             [("forecast", forecast.run), ("weather", weather.run), ("lm", tiny_lm_run.run)]}
    assert f"dlforge predict {forecast.run.as_posix()} recent.csv\n" in cards["forecast"]
    assert "`recent.csv`: a CSV or Parquet file of the series' latest values, a row per step (D): columns date " \
           "(optional: without it the rows are consecutive steps), sales; at least the last 8 steps; gives the 3 " \
           "steps after its last row." in cards["forecast"]
    assert f"dlforge predict {weather.run.as_posix()} recent_days.csv\n" in cards["weather"]
    assert "columns date, precipitation, temp_max, temp_min, wind and weather; each run of 5 days gives the next " \
           "day's class" in cards["weather"]
    assert f"dlforge predict {tiny_lm_run.run.as_posix()} prompts.txt\n" in cards["lm"]
    assert "input.csv" not in "".join(cards.values())


def test_predict_through_the_cli_on_each_kind_of_run(capsys, forecast, weather, tiny_lm_run, tmp_path):
    recent = write_rows(tmp_path / "recent.csv", ["date", "sales"],
                        [[day, f"{v:.4f}"] for day, v in zip(forecast.days[-20:], forecast.values[-20:], strict=True)])
    rows = ok_json(run_here(capsys, "predict", str(forecast.run), str(recent), "--json", "--out",
                            str(tmp_path / "forecast.csv")))
    assert [r["time"] for r in rows] == ["2020-04-30", "2020-05-01", "2020-05-02"]
    assert read_rows(tmp_path / "forecast.csv") == [{k: str(v) for k, v in r.items()} for r in rows]

    short = write_rows(tmp_path / "short.csv", ["date", "sales"], [[day, "1.0"] for day in forecast.days[:3]])
    line = one_line_error(run_here(capsys, "predict", str(forecast.run), str(short)))
    assert "short.csv: the model reads the last 8 steps of sales to forecast, the file has 3" in line

    table = run_here(capsys, "predict", str(weather.run), str(weather.days), "--top-k", "2")
    assert table.returncode == 0, table.stderr
    assert "top 1" in table.stdout and "top 2" in table.stdout and "top 3" not in table.stdout
    assert "p(rain)" not in table.stdout and "2012-01-13" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80  # fits a terminal of 80 columns

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    assert [r["prompt"] for r in ok_json(run_here(capsys, "predict", str(tiny_lm_run.run), str(prompts), "--json"))] \
        == PROMPTS
