"""The model card's sections after Mitchell et al. (2019), and the fairness audit that `dlforge fairness` puts into
it: rendered from the figures handed over, replaced (never duplicated) by a second audit, written atomically."""

from __future__ import annotations

import re

from dlforge.runs.card import NO_AUDIT, write_fairness_sections, write_model_card

MITCHELL = ("Model", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data", "Training",
            "Quantitative analyses", "Ethical considerations", "Caveats and recommendations", "How to load")
CONFIG = {"name": "people-mlp", "data": {"name": "csv", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 3},
          "model": {"name": "mlp", "hidden": [8]}, "train": {"optimizer": "adamw", "lr": 0.01}}
INFO = {"task": "classification", "num_classes": 2, "label_names": ["no", "yes"], "source": "people.csv",
        "split_sizes": {"train": 60, "val": 20, "test": 20}}


def card(tmp_path):
    run = tmp_path / "runs" / "people-mlp-20260101-000000"
    run.mkdir(parents=True)
    write_model_card(run, name="people-mlp", config=CONFIG, info=INFO, metrics={"test": {"accuracy": 0.8}},
                     params=10, wall_s=1.0)
    return run


def figure(value, ci=None):
    return {"value": value, "ci": ci}


def group(name, n, value, small=False):
    metrics = {k: figure(value, [value - 0.1, value + 0.1]) for k in
               ("f1", "selection_rate", "tpr", "fpr", "mean_score", "observed_rate", "ece")}
    metrics["tpr"] = figure(None)  # undefined: no positives
    return {"group": {"sex": name}, "name": f"sex={name}" if name else "all", "n": n, "small": small,
            "accuracy": figure(value, [value - 0.1, value + 0.1]), "classes": {"yes": metrics}}


def audit(seed=0, data="the test split of `csv` (data.split_seed 3)"):
    gaps = {k: figure(v, [v / 2, v * 1.5]) for k, v in (("demographic_parity_difference", 0.25),
                                                        ("demographic_parity_ratio", 0.5),
                                                        ("equalized_odds_difference", 0.125),
                                                        ("equalized_odds_ratio", 0.75))}
    return {"run": "r", "data": data, "when": "2026-01-01 00:00 UTC", "n": 20, "labels": ["no", "yes"],
            "classes": ["yes"], "sensitive": ["sex"], "min_group": 5, "bootstrap": 100, "seed": seed,
            "confidence": 0.95, "calibration_bins": 10, "overall": group("", 20, 0.8),
            "analyses": [{"columns": ["sex"], "groups": [group("f", 16, 0.75), group("m", 4, 0.5, small=True)],
                          "disparities": {"yes": gaps}, "flagged": ["sex=m"]}]}


def headings(text):
    """The `## ` headings outside fenced blocks."""
    return re.findall(r"^## (.+)$", re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S), flags=re.M)


def test_a_new_card_has_mitchells_sections_each_fact_recorded_or_said_not_to_be(tmp_path):
    text = (card(tmp_path) / "README.md").read_text()
    assert headings(text) == list(MITCHELL)
    assert "- Groups: not recorded; no sensitive attribute was named" in text
    assert "Not measured: the metrics above are of whole splits, none broken down by group." in text
    assert "- Sensitive attributes: not recorded (whether the data describe people" in text
    assert "- Splits evaluated: test (20 examples)" in text
    assert "data: val_fraction 0.2, test_fraction 0.2, split_seed 3" in text
    assert "- Training rows: the train split, 60 examples" in text
    assert NO_AUDIT in text


def test_an_audit_fills_the_sections_and_a_second_replaces_the_first(tmp_path):
    run = card(tmp_path)
    before = (run / "README.md").read_text()
    assert write_fairness_sections(run, audit()) == run / "README.md"
    text = (run / "README.md").read_text()
    assert headings(text) == list(MITCHELL)
    assert NO_AUDIT not in text and "Not measured: the metrics above" not in text
    assert "- A fairness audit was done on the test split of `csv` (data.split_seed 3): see Quantitative analyses." \
        in text
    assert "- Groups evaluated: sex (2 groups), on the test split of `csv`" in text
    assert "- Sensitive attributes: audited: sex (see Quantitative analyses)" in text
    assert "| group | n | accuracy | F1 | selection rate | TPR | FPR | mean p | observed rate | ECE |" in text
    assert "| all | 20 | 0.800 [0.700, 0.900] |" in text
    assert "| sex=f | 16 | 0.750 [0.650, 0.850] | 0.750 [0.650, 0.850] | 0.750 [0.650, 0.850] | - |" in text
    assert "| sex=m * | 4 |" in text  # under --min-group
    assert ("- Disparities: demographic parity difference 0.250 [0.125, 0.375], ratio 0.500 [0.250, 0.750]; "
            "equalized odds difference 0.125 [0.062, 0.188], ratio 0.750 [0.375, 1.125]") in text
    assert "- Fewer than 5 examples: sex=m" in text
    # everything else as it was
    keep = ("## Model", "## Intended use", "## Metrics", "## Training data", "## How to load")
    for heading in keep:
        assert section(text, heading) == section(before, heading)

    write_fairness_sections(run, audit(seed=9, data="`people.csv`"))
    again = (run / "README.md").read_text()
    assert headings(again) == list(MITCHELL)
    assert again.count("### By sex") == 1 and again.count("A fairness audit was done") == 1
    assert "seed 9" in again and "seed 0)" not in again
    assert "- A fairness audit was done on the test split" in again  # the caveat line, from the first audit
    assert [p.name for p in run.iterdir()] == ["README.md"]  # no temporary file left


def test_without_bootstrap_the_card_says_there_are_no_intervals(tmp_path):
    run = card(tmp_path)
    plain = audit()
    plain["bootstrap"] = 0
    write_fairness_sections(run, plain)
    assert "no intervals (not measured: --bootstrap 0)" in (run / "README.md").read_text()


def test_an_older_card_gains_the_sections_and_a_run_without_a_card_is_left_alone(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "README.md").write_text("# old\n\n## Model\n\n```yaml\n## not a heading\n```\n\n## Limitations\n\n"
                                   f"{NO_AUDIT}\n\n## How to load\n\nx\n")
    write_fairness_sections(run, audit())
    text = (run / "README.md").read_text()
    assert headings(text) == ["Model", "Factors", "Quantitative analyses", "Ethical considerations", "Limitations",
                              "How to load"]
    assert "```yaml\n## not a heading\n```" in text and NO_AUDIT not in text
    bare = tmp_path / "bare"
    bare.mkdir()
    assert write_fairness_sections(bare, audit()) is None and not any(bare.iterdir())


def section(text, heading):
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]
