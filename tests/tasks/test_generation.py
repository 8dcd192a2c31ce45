"""Generative models as a user runs them, through the CLI in this process: a VAE and an autoencoder on scikit-learn's
digits (data.task: generation), their metrics (ELBO parts, reconstruction MSE, the IWAE bound beside the
independent-pixel baseline) in eval.json and `dlforge eval --json`, the plots; the refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from clitools import ok_json, one_line_error, run_here

QUIET = {"progress": False, "tensorboard": False, "checkpoint_every": None, "log_every": 5, "seed": 0}
DIGITS = {"name": "digits", "task": "generation", "test_fraction": 0.2, "val_size": 0.1}


def write_config(path: Path, runs: Path, data: dict, model: dict, **train) -> Path:
    cfg = {"name": path.stem, "runs_dir": str(runs), "data": data, "model": model,
           "train": {"max_steps": 60, "batch_size": 64, "lr": 0.003, "optimizer": "adam", **QUIET, **train}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_here(config: Path) -> None:
    from dlforge.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["train", str(config), "--json"])
    assert done.value.code in (0, None)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    """A digits classifier: the feature extractor of FID, KID and IS."""
    tmp = tmp_path_factory.mktemp("cls")
    train_here(write_config(tmp / "cls.yaml", tmp / "runs", {**DIGITS, "task": "classification"},
                            {"name": "simple_cnn", "channels": [16, 32]}, max_steps=150))
    (run,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, classifier_run):
    tmp = tmp_path_factory.mktemp("vae")
    config = write_config(tmp / "vae.yaml", tmp / "runs",
                          {**DIGITS, "generation": {"iwae_k": 64, "iwae_images": 40, "extractor": str(classifier_run),
                                                    "samples": 150}},
                          {"name": "vae", "hidden": [64], "latent": 4}, monitor="val/loss", max_steps=300)
    train_here(config)
    (run,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    return run


def test_vae_run_reports_elbo_parts_and_the_iwae_bound(vae_run):
    ev = json.loads((vae_run / "eval.json").read_text())
    for split in ("train", "val", "test"):
        m = ev[split]
        assert m["elbo"] == pytest.approx(-(m["recon"] + m["kl"]), rel=1e-6)
        assert m["loss"] == pytest.approx(m["recon"] + m["kl"], rel=1e-3)  # beta 1: the loss is -ELBO
        assert m["kl"] > 0 and 0 <= m["mse"] < 0.25
    test = ev["test"]
    assert ev["generation"]["test"]["iwae"] == {"iwae_k": 64, "images": 40}
    assert test["nll_pixels"] > test["nll_iwae"] > 0  # 300 steps beat independent pixels
    for name in ("reconstructions", "samples", "interpolation", "latent_grid"):
        assert (vae_run / "plots" / f"{name}.png").stat().st_size > 0


def test_fid_kid_is_with_reference_rows_on_the_declared_extractor(vae_run, classifier_run):
    ev = json.loads((vae_run / "eval.json").read_text())
    test, report = ev["test"], ev["generation"]["test"]["fid"]
    assert report["fid"] == f"FID-classifier({classifier_run.name})" and report["samples"] == 150
    assert set(report["rows"]) == {"model", "real train (floor)", "Gaussian noise (ceiling)"}
    assert test["fid_floor"] < test["fid"] < test["fid_ceiling"]  # better than noise, worse than real images
    assert test["kid_floor"] < test["kid_ceiling"]
    assert 1 <= test["is"] <= 10 and 0 <= test["confident"] <= 1
    assert report["rows"]["model"]["fid"] == pytest.approx(test["fid"])


def test_eval_reprints_the_scores_of_the_run(vae_run, capsys):
    ev = json.loads((vae_run / "eval.json").read_text())
    out = ok_json(run_here(capsys, "eval", str(vae_run), "--json"))["metrics"]
    assert out["nll_iwae"] == pytest.approx(ev["test"]["nll_iwae"], rel=1e-6)  # seeded importance samples
    assert out["kl"] == pytest.approx(ev["test"]["kl"], rel=0.05)  # one z per image: a fresh draw
    assert out["fid"] == pytest.approx(ev["test"]["fid"], rel=1e-6)  # seeded samples, the same real images
    assert out["fid_floor"] == pytest.approx(ev["test"]["fid_floor"], rel=1e-6)


def test_autoencoder_learns_to_reconstruct(tmp_path, capsys):
    config = write_config(tmp_path / "ae.yaml", tmp_path / "runs", DIGITS,
                          {"name": "autoencoder", "hidden": [64], "code_size": 8}, monitor="val/mse", max_steps=150)
    out = ok_json(run_here(capsys, "train", str(config), "--json"))
    test = out["metrics"]["test"] if "metrics" in out else out["test"]
    pixels = json.loads(next((tmp_path / "runs").glob("ae-*/model/data_info.json")).read_text())["pixel_means"]
    assert len(pixels) == 1 and len(pixels[0]) == 8  # (C, H, W)
    assert test["mse"] < 0.05  # the mean image alone scores about 0.1 on digits

    # the encoder as a feature extractor: dlforge embed on image files gives the codes of those images
    import numpy as np
    from PIL import Image

    from dlforge import api
    from dlforge.cli.embed import IMAGE_SUFFIXES
    from dlforge.config import load_config
    from dlforge.data.imagefiles import IMAGE_SUFFIXES as KNOWN

    assert IMAGE_SUFFIXES == KNOWN
    run = next((tmp_path / "runs").glob("ae-*"))
    x = api.build_data(load_config(str(config))).test.tensors["x"][:3]  # (3, 1, 8, 8) in [0, 1]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    out = ok_json(run_here(capsys, "embed", str(run), "--input", str(folder), "--out", str(tmp_path / "c.npy"),
                           "--json"))
    assert out["images"] == 3 and out["dim"] == 8
    expected = api.load(run).encode(x).detach().numpy()
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), expected, atol=1e-5)


def test_wrong_model_and_data_pairs_are_refused_in_one_line(tmp_path, capsys):
    classifier = write_config(tmp_path / "cls.yaml", tmp_path / "runs", DIGITS, {"name": "simple_cnn"})
    err = one_line_error(run_here(capsys, "train", str(classifier)))
    assert "data 'digits' is for generative models (data.task: generation)" in err
    generative = write_config(tmp_path / "gen.yaml", tmp_path / "runs", {**DIGITS, "task": "classification"},
                              {"name": "vae"})
    err = one_line_error(run_here(capsys, "train", str(generative)))
    assert "a generative model" in err and "data.task: generation" in err


def test_sample_writes_a_seeded_grid_or_a_folder(vae_run, tmp_path, capsys):
    first = ok_json(run_here(capsys, "sample", str(vae_run), "--n", "16", "--out", str(tmp_path / "a.png"), "--json"))
    assert first["n"] == 16 and first["files"] == 1 and first["seed"] == 0
    run_here(capsys, "sample", str(vae_run), "--n", "16", "--out", str(tmp_path / "b.png"))
    ok_json(run_here(capsys, "sample", str(vae_run), "--n", "16", "--seed", "1", "--out", str(tmp_path / "c.png"),
                     "--json"))
    a, b, c = ((tmp_path / f"{k}.png").read_bytes() for k in "abc")
    assert a == b and a != c  # the seed decides the images
    folder = ok_json(run_here(capsys, "sample", str(vae_run / "model"), "--n", "5", "--out", str(tmp_path / "many"),
                              "--json"))
    assert folder["files"] == 5 and sorted(p.name for p in (tmp_path / "many").iterdir()) == [
        f"{i:05d}.png" for i in range(5)]


def test_sample_refusals_are_one_line(vae_run, tmp_path, capsys):
    err = one_line_error(run_here(capsys, "sample", str(vae_run), "--steps", "20", "--out", str(tmp_path / "x.png")))
    assert "--steps" in err and "diffusion" in err
    err = one_line_error(run_here(capsys, "sample", str(vae_run), "--class", "3", "--out", str(tmp_path / "x.png")))
    assert "--class" in err and "not class-conditional" in err
    err = one_line_error(run_here(capsys, "sample", str(vae_run), "--guidance", "3", "--out", str(tmp_path / "x.png")))
    assert "--guidance" in err and "no classifier-free guidance" in err
    err = one_line_error(run_here(capsys, "sample", str(vae_run), "--out", str(tmp_path / "missing" / "x.png")))
    assert "does not exist" in err
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory, classifier_run):
    tmp = tmp_path_factory.mktemp("ddpm")
    model = {"name": "ddpm_unet_cond", "channels": [8, 16], "norm_groups": 4, "head_dim": 4,
             "sampling": {"steps": 5}}
    train_here(write_config(tmp / "ddpm.yaml", tmp / "runs",
                            {**DIGITS, "generation": {"extractor": str(classifier_run), "samples": 40}}, model,
                            max_steps=20, ema={"decay": 0.9}))
    (run,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    return run


def test_diffusion_run_samples_with_steps_and_class(ddpm_run, tmp_path, capsys):
    ev = json.loads((ddpm_run / "eval.json").read_text())
    assert {"fid", "kid", "is", "class_match", "fid_floor", "fid_ceiling"} <= set(ev["test"])
    assert (ddpm_run / "plots" / "samples.png").stat().st_size > 0
    out = ok_json(run_here(capsys, "sample", str(ddpm_run), "--n", "6", "--steps", "3", "--class", "7",
                           "--out", str(tmp_path / "t.png"), "--json"))
    assert out["steps"] == 3 and out["class"] == 7 and out["n"] == 6
    again = ok_json(run_here(capsys, "sample", str(ddpm_run), "--n", "6", "--steps", "3", "--class", "7",
                             "--out", str(tmp_path / "u.png"), "--json"))
    assert again["class"] == 7 and (tmp_path / "t.png").read_bytes() == (tmp_path / "u.png").read_bytes()
    err = one_line_error(run_here(capsys, "sample", str(ddpm_run), "--class", "Hat", "--out", str(tmp_path / "v.png")))
    assert "unknown class 'Hat'" in err
    guided = ok_json(run_here(capsys, "sample", str(ddpm_run), "--n", "6", "--steps", "3", "--class", "7",
                              "--guidance", "4", "--out", str(tmp_path / "g.png"), "--json"))
    assert guided["guidance"] == 4.0 and (tmp_path / "g.png").read_bytes() != (tmp_path / "t.png").read_bytes()


def test_gan_trains_and_a_missing_extractor_skips_the_scores_with_a_note(tmp_path, capsys):
    model = {"name": "dcgan", "g_widths": [16, 8], "d_widths": [8, 16], "noise_dim": 8}
    config = write_config(tmp_path / "gan.yaml", tmp_path / "runs",
                          {**DIGITS, "generation": {"extractor": "latest:no-such-classifier"}}, model, max_steps=10)
    proc = run_here(capsys, "train", str(config), "--json")
    out = ok_json(proc)
    assert "FID, KID and IS skipped" in proc.stderr
    assert {"d_loss", "g_loss"} <= set(out["metrics"]["test"])
    ev = json.loads(next((tmp_path / "runs").glob("gan-*/eval.json")).read_text())
    assert "skipped" in ev["generation"]["test"]["fid"]
    run = next((tmp_path / "runs").glob("gan-*"))
    out = ok_json(run_here(capsys, "sample", str(run), "--n", "4", "--out", str(tmp_path / "g.png"), "--json"))
    assert out["files"] == 1 and (tmp_path / "g.png").stat().st_size > 0
