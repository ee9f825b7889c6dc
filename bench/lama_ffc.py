"""A LaMa-shaped network: the FFC ResNet generator of LaMa's big-lama config, random weights, traced to
TorchScript the way LaMa's ``bin/to_jit.py`` makes ``big-lama.pt``.

big-lama.pt is only published as a trained TorchScript file, so a GPU bench that may not download it
builds the same network itself. Everything here follows advimman/lama:

- ``configs/training/big-lama.yaml``, ``generator``: ``kind: ffc_resnet``, ``input_nc: 4`` (image + mask),
  ``output_nc: 3``, ``ngf: 64``, ``n_downsampling: 3``, ``n_blocks: 18``, ``add_out_act: sigmoid``;
  ``init_conv_kwargs`` and ``downsample_conv_kwargs`` ``ratio_gin = ratio_gout = 0``, ``enable_lfu: false``;
  ``resnet_conv_kwargs`` ``ratio_gin = ratio_gout = 0.75``, ``enable_lfu: false``.
- ``saicinpainting/training/modules/ffc.py``: ``FFCResNetGenerator`` (reflection pad 3 + 7x7 FFC, three
  stride-2 3x3 FFCs of which the last already splits 0.75 of its output to the global branch, 18
  ``FFCResnetBlock``s of two 3x3 FFCs each, ``ConcatTupleLayer``, three ConvTranspose2d + BatchNorm +
  ReLU, reflection pad 3 + 7x7 conv, sigmoid); ``FFC`` (local->local, local->global, global->local 3x3
  convs with reflect padding, global->global ``SpectralTransform``); ``SpectralTransform`` (1x1 conv to
  half width + BN + ReLU, a ``FourierUnit``, 1x1 conv back, summed with its input); ``FourierUnit``
  (``rfftn`` over H, W with ``norm='ortho'``, real and imaginary parts stacked as channels, 1x1 conv +
  BN + ReLU, ``irfftn`` back to the input's size). Defaults: BatchNorm2d, ReLU, ``max_features`` 1024.
- ``saicinpainting/training/trainers/default.py``, ``DefaultInpaintingTrainingModule.forward`` with
  ``concat_mask: true``: the generator sees ``cat(image * (1 - mask), mask)`` and the module returns
  ``mask * predicted + (1 - mask) * image`` (``inpainted``), which ``to_jit.py``'s ``JITWrapper`` returns.
- ``bin/to_jit.py``: ``torch.jit.trace(JITWrapper(model), (image, mask), strict=False)`` with
  ``image = torch.rand(1, 3, 120, 120)``, ``mask = torch.rand(1, 1, 120, 120)``: traced at batch 1.

The code is written here (not copied); module names match LaMa's, so the parameter count matches
big-lama's generator. ``batch_consistency`` (in ieiw/backends/inpaint/lama.py, which also runs it when a
model loads with ``batch_size > 1``) is the check the GPU bench runs on the traced file: a model
traced at batch 1 must give each image of a batch of 8 what it gives that image alone (our LaMa backend
sends ``batch_size`` images per call).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ieiw.backends.inpaint.lama import batch_consistency  # noqa: F401 - the check, shared with the backend's load

# big-lama.yaml's generator section
BIG_LAMA = {"input_nc": 4, "output_nc": 3, "ngf": 64, "n_downsampling": 3, "n_blocks": 18, "ratio": 0.75}
# the same structure at toy width and depth, for CPU tests
TINY_LAMA = {"input_nc": 4, "output_nc": 3, "ngf": 8, "n_downsampling": 3, "n_blocks": 2, "ratio": 0.75}


class FourierUnit(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        spectrum = torch.stack((spectrum.real, spectrum.imag), dim=-1)  # (b, c, h, w/2+1, 2)
        spectrum = spectrum.permute(0, 1, 4, 2, 3).contiguous()
        spectrum = spectrum.view((batch, -1) + spectrum.size()[3:])  # (b, 2c, h, w/2+1)
        spectrum = self.relu(self.bn(self.conv_layer(spectrum)))
        spectrum = spectrum.view((batch, -1, 2) + spectrum.size()[2:]).permute(0, 1, 3, 4, 2).contiguous()
        spectrum = torch.complex(spectrum[..., 0], spectrum[..., 1])
        return torch.fft.irfftn(spectrum, s=x.shape[-2:], dim=(-2, -1), norm="ortho")


class SpectralTransform(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.downsample = nn.AvgPool2d(kernel_size=(2, 2), stride=2) if stride == 2 else nn.Identity()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels // 2, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(out_channels // 2), nn.ReLU(inplace=True))
        self.fu = FourierUnit(out_channels // 2, out_channels // 2)
        self.conv2 = nn.Conv2d(out_channels // 2, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))  # enable_lfu: false in big-lama


def _conv_or_identity(in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int) -> nn.Module:
    if in_ch == 0 or out_ch == 0:
        return nn.Identity()
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False, padding_mode="reflect")


class FFC(nn.Module):
    """Fast Fourier convolution: channels split into a local and a global (spectral) part."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0):
        super().__init__()
        in_cg = int(in_channels * ratio_gin)
        in_cl = in_channels - in_cg
        out_cg = int(out_channels * ratio_gout)
        out_cl = out_channels - out_cg
        self.ratio_gin, self.ratio_gout, self.global_in_num = ratio_gin, ratio_gout, in_cg
        self.convl2l = _conv_or_identity(in_cl, out_cl, kernel_size, stride, padding)
        self.convl2g = _conv_or_identity(in_cl, out_cg, kernel_size, stride, padding)
        self.convg2l = _conv_or_identity(in_cg, out_cl, kernel_size, stride, padding)
        self.convg2g = nn.Identity() if in_cg == 0 or out_cg == 0 else SpectralTransform(in_cg, out_cg, stride)

    def forward(self, x):
        x_l, x_g = x if type(x) is tuple else (x, 0)
        out_l, out_g = 0, 0
        if self.ratio_gout != 1:
            out_l = self.convl2l(x_l) + self.convg2l(x_g)
        if self.ratio_gout != 0:
            out_g = self.convl2g(x_l) + self.convg2g(x_g)
        return out_l, out_g


class FFC_BN_ACT(nn.Module):  # LaMa's name: module paths (and parameter names) match
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding)
        global_channels = int(out_channels * ratio_gout)
        self.bn_l = nn.Identity() if ratio_gout == 1 else nn.BatchNorm2d(out_channels - global_channels)
        self.bn_g = nn.Identity() if ratio_gout == 0 else nn.BatchNorm2d(global_channels)
        self.act_l = nn.Identity() if ratio_gout == 1 else nn.ReLU(inplace=True)
        self.act_g = nn.Identity() if ratio_gout == 0 else nn.ReLU(inplace=True)

    def forward(self, x):
        x_l, x_g = self.ffc(x)
        return self.act_l(self.bn_l(x_l)), self.act_g(self.bn_g(x_g))


class FFCResnetBlock(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.conv1 = FFC_BN_ACT(dim, dim, 3, ratio, ratio, padding=1)
        self.conv2 = FFC_BN_ACT(dim, dim, 3, ratio, ratio, padding=1)

    def forward(self, x):
        x_l, x_g = x if type(x) is tuple else (x, 0)
        id_l, id_g = x_l, x_g
        x_l, x_g = self.conv2(self.conv1((x_l, x_g)))
        return id_l + x_l, id_g + x_g


class ConcatTupleLayer(nn.Module):
    def forward(self, x):
        x_l, x_g = x
        return x_l if not torch.is_tensor(x_g) else torch.cat(x, dim=1)


class FFCResNetGenerator(nn.Module):
    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, n_downsampling: int = 3, n_blocks: int = 18,
                 ratio: float = 0.75, max_features: int = 1024):
        super().__init__()
        model: list[nn.Module] = [nn.ReflectionPad2d(3), FFC_BN_ACT(input_nc, ngf, 7, 0, 0)]
        for i in range(n_downsampling):
            mult = 2 ** i
            gout = ratio if i == n_downsampling - 1 else 0  # the last downsampling feeds the global branch
            model.append(FFC_BN_ACT(min(max_features, ngf * mult), min(max_features, ngf * mult * 2), 3, 0, gout,
                                    stride=2, padding=1))
        features = min(max_features, ngf * 2 ** n_downsampling)
        model += [FFCResnetBlock(features, ratio) for _ in range(n_blocks)]
        model.append(ConcatTupleLayer())
        up_activation = nn.ReLU(True)  # one module, shared by the three upsampling steps, as in LaMa
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            out = min(max_features, int(ngf * mult / 2))
            model += [nn.ConvTranspose2d(min(max_features, ngf * mult), out, kernel_size=3, stride=2, padding=1,
                                         output_padding=1),
                      nn.BatchNorm2d(out), up_activation]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Sigmoid()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class InpaintingModule(nn.Module):
    """``DefaultInpaintingTrainingModule.forward`` in prediction (``concat_mask: true``), wrapped as
    ``to_jit.py``'s ``JITWrapper``: ``forward(image, mask) -> inpainted``."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = torch.cat([image * (1 - mask), mask], dim=1)
        predicted = self.generator(masked)
        return mask * predicted + (1 - mask) * image


def lama_shaped(spec: dict | None = None, seed: int = 0) -> InpaintingModule:
    """The big-lama generator (or ``spec``'s sizes) with seeded random weights, in eval mode. BatchNorm
    running statistics are randomised too, as a trained network's are not the identity."""
    spec = dict(BIG_LAMA if spec is None else spec)
    torch.manual_seed(seed)
    module = InpaintingModule(FFCResNetGenerator(**spec))
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.1, 0.1)
                layer.running_var.uniform_(0.5, 1.5)
    return module.eval()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def trace_to_file(module: nn.Module, path: Path, size: int = 120) -> Path:
    """``to_jit.py``'s trace: batch 1, a ``size`` x ``size`` random image and random (not binary) mask, on the CPU,
    ``strict=False``; saved where ``LamaConfig.checkpoint`` can name it."""
    image, mask = torch.rand(1, 3, size, size), torch.rand(1, 1, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings (shape -> int) and torch.jit's deprecation notice
        traced = torch.jit.trace(module.eval(), (image, mask), strict=False, check_trace=False)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        traced.save(str(path))
    return path


def load_traced(path: Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").to(device).eval()
