"""Model set-up: the zero-initialised 8-channel UNet, loading errors, the loss."""

from __future__ import annotations

import copy

import pytest
import torch

from ieiw.training.model import TrainingSetupError, widen_conv_in


@pytest.fixture(scope="module")
def unet4(tiny_sd):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_sd / "unet").eval()


def test_widened_unet_equals_original_at_step_zero_for_any_source_latent(unet4):
    unet8 = widen_conv_in(copy.deepcopy(unet4), 8).eval()
    assert unet8.config.in_channels == 8 and unet8.conv_in.weight.shape[1] == 8
    assert torch.equal(unet8.conv_in.weight[:, :4], unet4.conv_in.weight)
    assert torch.count_nonzero(unet8.conv_in.weight[:, 4:]) == 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    text = torch.randn(2, 77, unet4.config.cross_attention_dim, generator=g)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        reference = unet4(x, t, text).sample
        for scale in (0.0, 1.0, 100.0):
            source = torch.randn(2, 4, 16, 16, generator=g) * scale
            out = unet8(torch.cat([x, source], 1), t, text).sample
            torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    # and it is a real 8-channel model: non-zero source weights would change the output
    with torch.no_grad():
        unet8.conv_in.weight[:, 4:].fill_(0.1)
        assert not torch.allclose(unet8(torch.cat([x, source], 1), t, text).sample, reference, atol=1e-3)


def test_missing_weights_is_a_one_line_error(tmp_path):
    from ieiw.training.config import ModelConfig
    from ieiw.training.model import resolve_pretrained

    with pytest.raises(TrainingSetupError, match="CONFIG=configs/train.tiny.yaml"):
        resolve_pretrained(ModelConfig(pretrained=str(tmp_path / "no-such-sd15")))


def test_ema_warmup_follows_ldm_litema_by_default(unet4):
    from ieiw.training.config import EmaConfig
    from ieiw.training.model import make_ema

    ema = make_ema(EmaConfig(), unet4)
    # ldm LitEma: min(decay, (1 + n) / (10 + n)) with n counted from the first update
    for n in (1, 10, 100, 10_000, 10_000_000):
        assert ema.get_decay(n + 1) == pytest.approx(min(0.9999, (1 + n) / (10 + n)))
    power = make_ema(EmaConfig(warmup="power"), unet4)
    assert power.get_decay(101) == pytest.approx(1 - (1 + 100) ** -0.75)
    assert make_ema(EmaConfig(enabled=False), unet4) is None


@pytest.mark.parametrize("case", ["none", "image", "text"])
def test_edit_loss_latents_and_dropout_follow_the_official_code(tiny_sd, unet4, case):
    """Target latent = posterior sample x 0.18215, source latent = mode() unscaled (zeroed when image is dropped),
    null text = the empty prompt's embedding (when text is dropped); epsilon MSE."""
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from ieiw.training.data import ClipTokenize, normalize
    from ieiw.training.dropout import DropoutProbs
    from ieiw.training.model import edit_loss, null_text_embedding

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(tiny_sd / "text_encoder").eval()
    vae = AutoencoderKL.from_pretrained(tiny_sd / "vae").eval()
    unet8 = widen_conv_in(copy.deepcopy(unet4), 8).eval()
    with torch.no_grad():
        unet8.conv_in.weight[:, 4:].normal_()  # make the source channels matter
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    g = torch.Generator().manual_seed(3)
    batch = {"source": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g),
             "target": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g),
             "input_ids": torch.stack([ClipTokenize(tokenizer)("add a red hat")] * 2)}
    null = null_text_embedding(text_encoder, tokenizer)
    probs = {"none": DropoutProbs(0, 0, 0), "image": DropoutProbs(0, 1, 0), "text": DropoutProbs(1, 0, 0)}[case]
    with torch.no_grad():
        loss = edit_loss(batch, unet8, vae, text_encoder, scheduler, null, probs, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(0)  # replay the same draws in the same order
        latents = vae.encode(normalize(batch["target"], torch.float32)).latent_dist.sample(g) * 0.18215
        source = vae.encode(normalize(batch["source"], torch.float32)).latent_dist.mode()
        text = text_encoder(batch["input_ids"])[0]
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        if case == "image":
            source = torch.zeros_like(source)
        if case == "text":
            text = null.expand_as(text)
        pred = unet8(torch.cat([scheduler.add_noise(latents, noise, t), source], 1), t, text).sample
        assert loss.item() == pytest.approx(F.mse_loss(pred, noise).item(), rel=1e-5)
