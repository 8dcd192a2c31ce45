"""Time series and sequence data: the bundled series, gaps, splits in time order, scaling on the training part,
windows against the raw series, the seasonal naive, the user's CSV and every error it can cause; seattle_weather."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlforge.data.timeseries import (
    TimeSeriesConfig,
    co2,
    scale_values,
    seattle_temps,
    sunspots,
    timeseries_csv,
    unscale_forecast,
)
from dlforge.data.weather_sequences import SequenceConfig, seattle_weather
from dlforge.errors import ConfigError, DataError
from dlforge.registry import dataset_entry


def statsmodels_frame(name: str):
    try:
        from statsmodels import datasets
    except ImportError:
        pytest.fail("these tests need statsmodels' bundled data; pip install statsmodels")
    return getattr(datasets, name).load_pandas().data


def vega_local_data():
    try:
        from vega_datasets import local_data
    except ImportError:
        pytest.fail("these tests need vega_datasets' bundled data; pip install vega_datasets")
    return local_data


def splits(bundle):
    return {s: getattr(bundle, s).tensors for s in ("train", "val", "test") if getattr(bundle, s) is not None}


def series_from_windows(bundle) -> np.ndarray:
    """The whole series (original units, first target) rebuilt from every sample's x and y; NaN where none reaches.

    Overlapping windows must agree, so this also checks that every window was cut from one and the same series."""
    info = bundle.info
    mean, std = info["target_offset"][0], info["target_scale"][0]
    out = np.full(info["steps"], np.nan)
    window, horizon, t_count = info["window"], info["horizon"], info["num_targets"]
    for tensors in splits(bundle).values():
        for x, y, t in zip(tensors["x"].double(), tensors["y"].double(), tensors["t"].tolist(), strict=True):
            for positions, values in ((np.arange(t - window, t), x[:, 0]), (np.arange(t, t + horizon), y[::t_count])):
                values = values.numpy() * std + mean
                known = ~np.isnan(out[positions])
                np.testing.assert_allclose(out[positions][known], values[known], rtol=1e-5)
                out[positions] = values
    return out


@pytest.fixture(scope="module")
def co2_bundle():
    return co2(TimeSeriesConfig(name="co2"))


# --- the bundled series ------------------------------------------------------------------------------------------


def test_co2_defaults_and_its_59_gaps_filled_linearly_in_time(co2_bundle):
    info = co2_bundle.info
    assert (info["steps"], info["filled"], info["season"], info["window"], info["horizon"]) == (2284, 59, 52, 104, 8)
    assert info["freq"] == "W-SAT" and info["task"] == "forecast" and info["test_start"] == 2284 - 104
    assert info["test_times"][0] == "2000-01-08T00:00:00" and len(info["test_times"]) == 104
    assert co2_bundle.model_defaults == {"in_features": 1, "horizon": 8, "num_targets": 1, "out_features": 8}
    frame = statsmodels_frame("co2")
    expected = frame["co2"].interpolate(method="time").to_numpy()
    rebuilt = series_from_windows(co2_bundle)
    assert np.isnan(rebuilt).sum() == 0  # every step is in some window
    np.testing.assert_allclose(rebuilt, expected, rtol=1e-6)
    gaps = np.flatnonzero(frame["co2"].isna().to_numpy())
    assert len(gaps) == 59 and not np.isnan(rebuilt[gaps]).any()


def test_splits_in_time_order_and_the_test_tail_is_the_last_104_weeks(co2_bundle):
    n, horizon, val_start = 2284, 8, 2284 - 104 - 104
    s = splits(co2_bundle)
    train_t, val_t, test_t = (s[k]["t"].numpy() for k in ("train", "val", "test"))
    assert train_t.min() == 104 and train_t.max() + horizon <= val_start  # train targets end before val
    assert val_t.min() == val_start and val_t.max() + horizon <= n - 104  # val targets end before the test tail
    np.testing.assert_array_equal(test_t, np.arange(n - 104, n - horizon + 1))  # every origin in the tail
    assert np.all(np.diff(train_t) == 1) and len(train_t) == co2_bundle.info["n_train"]


def test_targets_and_seasonal_naive_come_from_the_series(co2_bundle):
    info = co2_bundle.info
    series = (series_from_windows(co2_bundle) - info["target_offset"][0]) / info["target_scale"][0]
    test = splits(co2_bundle)["test"]
    t = test["t"].numpy()
    for h in range(8):
        np.testing.assert_allclose(test["y"][:, h].numpy(), series[t + h], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(test["naive"][:, h].numpy(), series[t + h - 52], rtol=1e-5, atol=1e-6)


def test_scaler_and_mase_scale_use_the_training_part_only(co2_bundle):
    from sklearn.preprocessing import StandardScaler

    values = statsmodels_frame("co2")["co2"].interpolate(method="time").to_numpy()
    n_train = 2284 - 208
    scaler = StandardScaler().fit(values[:n_train, None])
    info = co2_bundle.info
    assert info["target_mean"][0] == pytest.approx(scaler.mean_[0]) and info["target_std"][0] == pytest.approx(
        scaler.scale_[0])
    # Hyndman & Koehler's scale: in-sample MAE of the seasonal naive on the training part
    expected = np.mean(np.abs(values[52:n_train] - values[:n_train - 52]))
    assert info["mase_scale"] == [pytest.approx(expected)]
    assert 1.0 < expected < 1.6  # about the yearly rise, in ppm
    x_train = splits(co2_bundle)["train"]["x"]
    assert splits(co2_bundle)["test"]["y"].max() > x_train.max() + 0.2  # the test tail rises above the training range


def test_sunspots_and_seattle_temps():
    spots = sunspots(TimeSeriesConfig(name="sunspots"))
    assert (spots.info["steps"], spots.info["season"], spots.info["filled"], spots.info["freq"]) == (309, 11, 0, "1")
    assert spots.info["test_times"][0] == 1979.0 and spots.info["test_times"][-1] == 2008.0
    temps = seattle_temps(TimeSeriesConfig(name="seattle_temps", test_size=48, val_size=48, window=24, horizon=6))
    # 8759 hourly readings of 2010: the hour skipped by daylight saving time is the one step filled in
    assert (temps.info["steps"], temps.info["filled"], temps.info["season"], temps.info["freq"]) == (8760, 1, 24, "h")
    raw = vega_local_data().seattle_temps()
    assert len(raw) == 8759
    assert temps.test.tensors["x"].shape == (48 - 6 + 1, 24, 1)


def test_fill_drop_and_error_on_co2():
    dropped = co2(TimeSeriesConfig(name="co2", fill="drop"))
    gaps = set(np.flatnonzero(statsmodels_frame("co2")["co2"].isna().to_numpy()).tolist())
    for tensors in splits(dropped).values():
        for t in tensors["t"].tolist():  # no window reaches a missing week (inputs, targets or the naive's weeks)
            touched = set(range(t - 104, t + 8)) | {t + h - 52 for h in range(8)}
            assert not touched & gaps
    assert dropped.info["filled"] == 0 and dropped.info["n_train"] < 1965
    with pytest.raises(DataError, match=r"^co2: row 7: column 'co2': missing value; set data.fill: interpolate or"):
        co2(TimeSeriesConfig(name="co2", fill="error"))


def test_registered_with_docstrings_and_json_preprocessing(co2_bundle):
    for name in ("co2", "sunspots", "seattle_temps", "timeseries_csv"):
        entry = dataset_entry(name)
        assert entry.config_cls is TimeSeriesConfig and entry.doc
    assert dataset_entry("seattle_weather").config_cls is SequenceConfig
    pre = json.loads(json.dumps(co2_bundle.preprocessing))
    test = splits(co2_bundle)["test"]
    original = unscale_forecast(pre, test["y"])  # (S, H, 1)
    rebuilt = series_from_windows(co2_bundle)
    np.testing.assert_allclose(original[:, 0, 0].numpy(), rebuilt[test["t"].numpy()], rtol=1e-6)
    torch.testing.assert_close(scale_values(pre, original[:, :, 0:1]), test["y"][:, :, None], rtol=1e-5, atol=1e-5)
    json.dumps(co2_bundle.info)


# --- the user's CSV ----------------------------------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "series.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path, **fields):
    return timeseries_csv(TimeSeriesConfig(name="timeseries_csv", path=str(path), **fields))


SMALL = {"window": 2, "horizon": 1, "test_size": 1, "val_size": 1}

# daily rows with a missing value (line 3), a missing day (2024-01-04) and an off-grid time (line 7)
GAPPY = ("date,sales,temp,note\n2024-01-01,10,1.5,a\n2024-01-02,12,,b\n2024-01-03,14,2.5,c\n2024-01-05,18,3.5,d\n"
         "2024-01-06,20,4.0,e\n2024-01-07T12:00,23,4.5,f\n2024-01-08,24,5,g\n")


def test_csv_gaps_and_off_grid_times_are_interpolated_in_time(tmp_path):
    bundle = load(write(tmp_path, GAPPY), time_column="date", **SMALL)
    info = bundle.info
    assert info["value_columns"] == ["sales", "temp"] and info["target_columns"] == ["sales", "temp"]  # note: text
    assert info["freq"] == "D" and info["steps"] == 8
    assert info["filled"] == 5  # temp on the 2nd, both on the 4th, both at midnight of the 7th
    # 2024-01-07 00:00 lies 2/3 of the way from the 6th (20, 4.0) to the 7th at noon (23, 4.5)
    expected = np.array([[10, 1.5], [12, 2.0], [14, 2.5], [16, 3.0], [18, 3.5], [20, 4.0], [22, 4 + 1 / 3], [24, 5]])
    offset, scale = np.array(bundle.preprocessing["offset"]), np.array(bundle.preprocessing["scale_factor"])
    train = bundle.train.tensors
    for x, t in zip(train["x"].double().numpy(), train["t"].tolist(), strict=True):
        np.testing.assert_allclose(x * scale + offset, expected[t - 2:t], rtol=1e-5)
    np.testing.assert_allclose(offset, expected[:6].mean(0))  # scaler fitted on the 6 training steps only
    assert bundle.train.tensors["y"].shape == (4, 2)  # horizon 1 x 2 targets


def test_csv_targets_come_first_and_multi_step_targets_are_horizon_major(tmp_path):
    rows = "".join(f"{i},{i * 10},{-i},{i % 3}\n" for i in range(40))
    path = write(tmp_path, "step,a,b,c\n" + rows)
    bundle = load(path, time_column="step", target_columns=["b", "a"], window=4, horizon=3, test_size=6, val_size=3,
                  scale="none")
    assert bundle.info["value_columns"] == ["b", "a", "c"] and bundle.model_defaults["out_features"] == 6
    test = bundle.test.tensors
    t = test["t"][0].item()
    assert test["x"][0, -1].tolist() == [-(t - 1), (t - 1) * 10, (t - 1) % 3]  # x columns: targets first
    assert test["y"][0].tolist() == [-t, t * 10, -(t + 1), (t + 1) * 10, -(t + 2), (t + 2) * 10]  # h*T + j
    assert unscale_forecast(bundle.preprocessing, test["y"][:1]).shape == (1, 3, 2)


def test_seasonal_naive_reaches_back_whole_seasons_when_the_horizon_exceeds_one(tmp_path):
    path = write(tmp_path, "v\n" + "".join(f"{i}\n" for i in range(60)))  # no time column: rows are the steps
    bundle = load(path, season=4, window=4, horizon=6, test_size=10, val_size=0, scale="none")
    assert bundle.val is None and bundle.info["freq"] == "1 row"
    test = bundle.test.tensors
    t = test["t"].numpy()[:, None]
    h = np.arange(6)
    back = 4 * np.ceil((h + 1) / 4)  # h = 0..3: one season back; h = 4, 5: two
    np.testing.assert_array_equal(test["naive"].numpy(), t + h - back)
    assert (test["naive"].numpy() < t).all()  # never a value from after the origin


def test_csv_numeric_time_with_a_gap_and_an_explicit_freq(tmp_path):
    text = "year,v\n" + "".join(f"{1900 + 2 * i},{i}\n" for i in range(30) if i != 7)
    bundle = load(write(tmp_path, text), time_column="year", **SMALL)
    assert bundle.info["freq"] == "2" and bundle.info["steps"] == 30 and bundle.info["filled"] == 1
    finer = load(write(tmp_path, text), time_column="year", freq="1", **SMALL)
    assert finer.info["steps"] == 59 and finer.info["filled"] == 59 - 29


def test_fill_drop_leaves_out_windows_over_gaps(tmp_path):
    lines = [f"2024-01-{d:02d},{d}" for d in range(1, 31) if d != 12]
    text = "day,v\n" + "\n".join(lines).replace("2024-01-20,20", "2024-01-20,") + "\n"
    bundle = load(write(tmp_path, text), time_column="day", fill="drop", window=3, horizon=2, test_size=4, val_size=4)
    assert bundle.info["filled"] == 0 and bundle.info["steps"] == 30
    bad = {11, 19}  # 0-based positions of the missing day and the missing value
    kept = [t for s in splits(bundle).values() for t in s["t"].tolist()]
    # origins: train 3..20 (targets end before step 22), val 22..24, test 26..28; then the gap-free ones
    origins = [*range(3, 21), *range(22, 25), *range(26, 29)]
    assert sorted(kept) == [t for t in origins if not bad & set(range(t - 3, t + 2))]


def test_minmax_scaling_stride_and_max_train(tmp_path):
    path = write(tmp_path, "v\n" + "".join(f"{(i * 7) % 23}\n" for i in range(80)))
    bundle = load(path, scale="minmax", window=5, horizon=2, test_size=10, val_size=10, stride=3)
    x = bundle.train.tensors["x"]
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert bundle.info["target_min"] == [0.0] and bundle.info["target_max"] == [22.0]
    assert np.all(np.diff(bundle.train.tensors["t"].numpy()) == 3)
    capped = load(path, window=5, horizon=2, test_size=10, val_size=10, max_train=7)
    assert capped.train.tensors["t"].tolist() == list(range(52, 59))  # the most recent 7 (targets < 60)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("date,v\n2024-01-01,1\n2024-01-02,x\n2024-01-03,3\n", r":3: column 'v': expected a number, found 'x'$"),
        ("date,v\n2024-01-01,1\n2024-01-02,1e200\n2024-01-03,3\n",  # inf as float32 (issue 13, defect 26)
         r":3: column 'v': expected a finite number within float32's range \(±3.4e\+38\), found '1e200'$"),
        ("date,v\n2024-01-01,1\n2024-01-02,-inf\n2024-01-03,3\n",
         r":3: column 'v': expected a finite number within float32's range \(±3.4e\+38\), found '-inf'$"),
        ("date,v\n2024-01-01,1\nsoon,2\n2024-01-03,3\n",
         r":3: column 'date': expected a date/time such as 2024-01-31 or 2024-01-31T13:00, found 'soon'$"),
        ("date,v\n2024-01-01,1\n,2\n2024-01-03,3\n", r":3: column 'date': missing time; every row needs one$"),
        ("date,v\n2024-01-01,1\n2024-01-02,2\n2024-01-02,3\n2024-01-03,4\n",
         r":4: duplicate time 2024-01-02 \(also at .*:3\); expected one row per time$"),
        ("date,v\n" + "".join(f"2024-01-{d:02d},{d}\n" for d in (1, 2, 3, 5, 6, 7)) + "2024-01-07T06:00,7\n",
         r":5: gap before this row: no row for 2024-01-04 \(freq 'D'\); set data.fill: interpolate or drop$"),
        ("date,v\n" + "".join(f"2024-01-{d:02d},{d}\n" for d in (1, 2, 3, 4)) + "2024-01-04T06:00,7\n2024-01-05,5\n",
         r":6: time 2024-01-04 06:00:00 is not on the regular grid \(freq 'D' from 2024-01-01\)"),
        ("date,v\n" + "".join(f"2024-01-{d:02d},{'' if d == 3 else d}\n" for d in range(1, 9)),
         r":4: column 'v': missing value; set data.fill: interpolate or drop$"),
    ],
)
def test_csv_errors_name_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=f"^{path}{message}"):
        load(path, time_column="date", fill="error", **SMALL)


def test_csv_error_reports_first_bad_row_in_time_order_on_unsorted_rows(tmp_path):
    path = write(tmp_path, "date,v\n2024-01-05,5\n2024-01-01,1\n2024-01-02,\n2024-01-03,3\n2024-01-04,4\n")
    with pytest.raises(DataError, match=f"^{path}:4: column 'v': missing value"):
        load(path, time_column="date", fill="error", **SMALL)
    sorted_ok = load(path, time_column="date", **SMALL)  # unsorted rows are sorted by time
    assert sorted_ok.info["filled"] == 1


def test_config_and_size_errors(tmp_path):
    with pytest.raises(ConfigError, match="^data.path: required for dataset 'timeseries_csv'$"):
        TimeSeriesConfig(name="timeseries_csv")
    with pytest.raises(ConfigError, match="^data.time_column: not used by the bundled dataset 'co2'"):
        TimeSeriesConfig(name="co2", time_column="date")
    with pytest.raises(ConfigError, match=r"^data.test_size: 4 steps cannot hold one horizon of 8"):
        co2(TimeSeriesConfig(name="co2", test_size=4))
    path = write(tmp_path, "v\n" + "".join(f"{i}\n" for i in range(20)))
    with pytest.raises(DataError, match=rf"^{path}: 20 steps leave 4 for training, too few for a window of 16"):
        load(path, test_size=8, val_size=8)
    daily = write(tmp_path, "date,v\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n", "daily.csv")
    with pytest.raises(ConfigError, match=r"^data.freq: expected a pandas frequency such as 1h"):
        load(daily, time_column="date", freq="fortnightly", **SMALL)
    with pytest.raises(DataError, match=rf"^{daily}: a step of s makes 172801 time steps from 3 rows"):
        load(daily, time_column="date", freq="s", **SMALL)
    with pytest.raises(DataError, match=rf"^{daily}: target column 'w' not found"):
        load(daily, time_column="date", target_columns=["w"], **SMALL)


# --- sequence classification: seattle_weather --------------------------------------------------------------------


def test_seattle_weather_windows_of_past_days_predict_the_next_days_weather():
    bundle = seattle_weather(SequenceConfig(name="seattle_weather", window=7, test_size=100, val_size=50))
    info = bundle.info
    assert info["label_names"] == ["drizzle", "fog", "rain", "snow", "sun"] and info["num_classes"] == 5
    assert bundle.model_defaults["in_features"] == 11 == len(info["feature_names"])
    assert (info["n_train"], info["n_val"], info["n_test"]) == (1461 - 150 - 7, 50, 100)
    frame = vega_local_data().seattle_weather()
    ids = np.searchsorted(info["label_names"], frame["weather"].astype(str).to_numpy())
    test = bundle.test.tensors
    np.testing.assert_array_equal(test["y"].numpy(), ids[-100:])  # the last 100 days, in order
    # the last input day's one-hot weather is the day before the target, and its day-of-year angle matches
    np.testing.assert_array_equal(test["x"][:, -1, 4:9].argmax(1).numpy(), ids[-101:-1])
    angle = 2 * np.pi * frame["date"].dt.day_of_year.to_numpy()[-101:-1] / 365.25
    np.testing.assert_allclose(test["x"][:, -1, 9].numpy(), np.sin(angle), atol=1e-6)
    # measurements scaled with the training days' statistics (1461 - 150 of them)
    raw = frame[["precipitation", "temp_max", "temp_min", "wind"]].to_numpy()
    mean, std = raw[:1311].mean(0), raw[:1311].std(0)
    np.testing.assert_allclose(test["x"][:, -1, :4].numpy(), (raw[-101:-1] - mean) / std, rtol=1e-4, atol=1e-5)
    assert info["baselines"]["persistence_accuracy"] == pytest.approx(np.mean(ids[-100:] == ids[-101:-1]))


def test_seattle_weather_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    bundle = seattle_weather(SequenceConfig(name="seattle_weather", class_weights="balanced"))
    y = bundle.train.tensors["y"].numpy()
    np.testing.assert_allclose(bundle.model_defaults["class_weights"],
                               compute_class_weight("balanced", classes=np.arange(5), y=y))
    with pytest.raises(DataError, match=r"^seattle_weather: 1461 days leave 1 for training, too few for a window"):
        seattle_weather(SequenceConfig(name="seattle_weather", test_size=1000, val_size=460))
