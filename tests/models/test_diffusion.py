"""The diffusion U-Net equals diffusers' UNet2DModel on the same weights (its config from `diffusers_config()`), its
training loss targets the noise or v, and sampling is seeded, guided, and follows the scheduler's steps."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from dlforge.errors import ConfigError
from dlforge.registry import create_model

TINY = {"image_size": 8, "channels": [8, 16], "norm_groups": 4, "head_dim": 4}


@pytest.mark.parametrize(("layers", "conditional", "attention", "channels"),
                         [(1, False, True, [8, 16]), (2, True, True, [8, 16, 16]), (1, True, False, [8, 8])])
def test_unet_equals_diffusers_unet2dmodel_on_the_same_weights(layers, conditional, attention, channels):
    torch.manual_seed(0)
    model = create_model("ddpm_unet", **{**TINY, "channels": channels}, layers_per_block=layers,
                         conditional=conditional, attention=attention).eval()
    for p in model.parameters():  # past the zero-ish init: every weight matters
        p.data.normal_(0, 0.2)
    ref = UNet2DModel(**model.diffusers_config()).eval()
    missing = ref.load_state_dict(model.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 417, 999])
    labels = torch.tensor([2, 10, 5]) if conditional else None  # 10: "no class"
    with torch.no_grad():
        ours = model.net(x, t, labels)
        theirs = ref(x, t, class_labels=labels).sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_training_loss_is_the_mse_to_the_schedule_target(prediction):
    torch.manual_seed(0)
    model = create_model("ddpm_unet", **TINY, schedule={"prediction": prediction})
    batch = model.example_batch(4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    out = model(batch)
    torch.manual_seed(5)  # the same t and noise, drawn in the same order
    x0 = batch["x"] * 2 - 1
    t = torch.randint(0, 1000, (4,))
    noise = torch.randn_like(x0)
    pred = model.net(model.schedule.add_noise(x0, noise, t), t)
    expected = ((pred - model.schedule.target(x0, noise, t)) ** 2).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sampling_is_seeded_bounded_and_matches_a_hand_loop_with_diffusers_ddim():
    torch.manual_seed(0)
    model = create_model("ddpm_unet", **TINY, sampling={"steps": 5, "spacing": "leading"}).eval()
    a = model.sample(3, generator=torch.Generator().manual_seed(7))
    b = model.sample(3, generator=torch.Generator().manual_seed(7))
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(8)))
    # the same loop written with diffusers' DDIM scheduler around our network
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="leading")
    sched.set_timesteps(5)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model.net(x, torch.full((3,), int(t))), t, x).prev_sample
    torch.testing.assert_close(a, ((x + 1) / 2).clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_guided_sampling_and_progress():
    torch.manual_seed(0)
    model = create_model("ddpm_unet_cond", **TINY, num_classes=3, sampling={"steps": 4, "guidance": 3.0}).eval()
    seen = []
    labels = torch.tensor([0, 1, 2, 0])
    images = model.sample(4, generator=torch.Generator().manual_seed(0), labels=labels,
                          progress=lambda done, total: seen.append((done, total)), batch_size=2)
    assert images.shape == (4, 1, 8, 8)
    assert seen == [(i, 8) for i in range(1, 9)]  # 4 steps for each of 2 batches
    unguided = create_model("ddpm_unet_cond", **TINY, num_classes=3, sampling={"steps": 4, "guidance": 1.0}).eval()
    unguided.load_state_dict(model.state_dict())
    plain = unguided.sample(4, generator=torch.Generator().manual_seed(0), labels=labels, batch_size=2)
    assert not torch.allclose(images, plain)
    # the scale given at sampling time overrides the config's
    torch.testing.assert_close(model.sample(4, generator=torch.Generator().manual_seed(0), labels=labels,
                                            batch_size=2, guidance=1.0), plain)


def test_ddpm_sampler_draws_noise_at_every_step_but_the_last():
    torch.manual_seed(0)
    model = create_model("ddpm_unet", **TINY, sampling={"steps": 6, "sampler": "ddpm"}).eval()
    a = model.sample(2, generator=torch.Generator().manual_seed(3))
    b = model.sample(2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("overrides", "key"), [({"channels": [8, 10]}, "model.channels"),
                                               ({"image_size": 10, "channels": [8, 16, 16]}, "model.channels"),
                                               ({"head_dim": 3}, "model.head_dim"),
                                               ({"sampling": {"steps": 2000}}, "model.sampling.steps")])
def test_bad_shapes_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        create_model("ddpm_unet", **{**TINY, **overrides})
