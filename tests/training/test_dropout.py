"""Conditioning dropout proportions over 10k draws (within 1 percentage point)."""

from __future__ import annotations

import pytest
import torch

from ieiw.training.config import DropoutConfig
from ieiw.training.dropout import SCHEMES, draw_dropout, dropout_probs


@pytest.mark.parametrize(
    "scheme, text_only, image_only, both",
    [("instructdiffusion", 0.075, 0.075, 0.0), ("instructpix2pix", 0.05, 0.05, 0.05)],
)
def test_scheme_proportions_over_10k_draws(scheme, text_only, image_only, both):
    torch.manual_seed(1234)
    drop_text, drop_image = draw_dropout(10_000, dropout_probs(DropoutConfig(scheme=scheme)))
    rates = {
        "text_only": (drop_text & ~drop_image).float().mean().item(),
        "image_only": (~drop_text & drop_image).float().mean().item(),
        "both": (drop_text & drop_image).float().mean().item(),
    }
    for name, want in {"text_only": text_only, "image_only": image_only, "both": both}.items():
        assert abs(rates[name] - want) <= 0.01, (name, rates[name], want)
    if scheme == "instructdiffusion":
        assert rates["both"] == 0.0  # never both, exactly


def test_default_is_the_official_scheme():
    assert dropout_probs(DropoutConfig()) == SCHEMES["instructdiffusion"]


def test_custom_scheme_needs_all_three():
    with pytest.raises(ValueError):
        DropoutConfig(scheme="custom", text_only=0.1)
    probs = dropout_probs(DropoutConfig(scheme="custom", text_only=0.0, image_only=1.0, both=0.0))
    drop_text, drop_image = draw_dropout(100, probs)
    assert drop_image.all() and not drop_text.any()
