"""A tiny TorchScript model with big-lama.pt's call signature ``forward(image, mask) -> image``.

Shared by the LaMa tests and benches: seeded random convolutions (so outputs differ inside the mask
and a wrong pre/post-processing step shows), or the identity (a zero-cost model for overhead benches).
"""

from __future__ import annotations

from pathlib import Path

import torch


class TinyLama(torch.nn.Module):
    """input = cat(image * (1 - mask), mask) as LaMa's own wrapper does; output in [0, 1]."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image * (1 - mask), mask], dim=1)
        return torch.sigmoid(self.conv2(torch.relu(self.conv1(x))))


class IdentityLama(torch.nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image


def write_tiny_lama(path: Path, identity: bool = False, seed: int = 0) -> Path:
    """Trace and save the model to ``path`` (TorchScript, loadable with ``torch.jit.load``)."""
    module = (IdentityLama() if identity else TinyLama(seed)).eval()
    example = (torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return Path(path)
