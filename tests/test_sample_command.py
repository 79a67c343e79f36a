"""`ganforge sample --per-class` and `--edit-class`: the PNG grids hold what the models make, laid out one
row per class / per real image, and misuse is one clear line.

Checkpoints are made the way `ganforge fit` makes them (LightningCLI builds the module, so the networks'
config is saved with it), trained a few steps on tiny networks: the layout is under test, not the quality.
"""

import io
import sys
import tarfile

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning.cli import LightningCLI
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from datamodules.image_decode import decode_image
from modules.nets.conditional import per_class_labels
from pipeline.commands import shards as shards_command
from pipeline.commands.checkpoint_loading import load_module
from pipeline.commands.cli import main
from pipeline.image_grid import make_grid

SIZE, CLASSES, LATENT = 16, 3, 8
NET = {"resolution": SIZE, "channels": 1, "base_width": 8, "max_width": 32}
PAD = 2  # make_grid's padding


def generator(num_classes: int) -> dict:
    return {"class_path": "modules.nets.dcgan.DCGANGenerator",
            "init_args": {"latent_dim": LATENT, "num_classes": num_classes, "conditioning": "concat", **NET}}


def gan_config(num_classes: int) -> dict:
    return {"class_path": "modules.gan.GAN",
            "init_args": {"generator": generator(num_classes), "ema_kimg": 1.0, "noise_seed": 0,
                          "discriminator": {"class_path": "modules.nets.dcgan.DCGANDiscriminator",
                                            "init_args": {"num_classes": num_classes, "conditioning": "concat",
                                                          **NET}}}}


def icgan_config(generator_checkpoint: str) -> dict:
    encoder = "modules.nets.dcgan.DCGANEncoder"
    return {"class_path": "modules.icgan.IcGAN",
            "init_args": {"generator": generator(CLASSES), "num_classes": CLASSES, "noise_seed": 0,
                          "generator_checkpoint": generator_checkpoint,
                          "encoder_z": {"class_path": encoder, "init_args": {"latent_dim": LATENT, **NET}},
                          "encoder_y": {"class_path": encoder, "init_args": {"latent_dim": CLASSES, **NET}}}}


def fit_checkpoint(model_config: dict, path, steps: int = 3) -> str:
    """Train ``steps`` steps on digits 0..2 (16 px) and save the checkpoint, the module built by LightningCLI."""
    digits = load_digits()
    keep = digits.target < CLASSES
    x = torch.tensor(digits.images[keep], dtype=torch.float32)[:, None] / 8 - 1
    x = F.interpolate(x, size=SIZE, mode="bilinear")
    y = torch.tensor(digits.target[keep])
    trainer = {"max_steps": steps, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(path.parent)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["ganforge"])  # LightningCLI warns of pytest's own arguments
        cli = LightningCLI(pl.LightningModule, subclass_mode_model=True, run=False, save_config_callback=None,
                           args={"model": model_config, "trainer": trainer, "seed_everything": 0})
    cli.trainer.fit(cli.model, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    cli.trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Checkpoints (conditional GAN, unconditional GAN, IcGAN on the conditional one) and 16 px digit shards."""
    torch.set_num_threads(1)  # tiny nets on a shared 2-core machine
    tmp = tmp_path_factory.mktemp("sample")
    cgan = fit_checkpoint(gan_config(CLASSES), tmp / "cgan.ckpt")
    gan = fit_checkpoint(gan_config(0), tmp / "gan.ckpt")
    start = tmp / "start.ckpt"  # the GAN checkpoint IcGAN starts from; gone before IcGAN is loaded
    start.write_bytes((tmp / "cgan.ckpt").read_bytes())
    icgan = fit_checkpoint(icgan_config(str(start)), tmp / "icgan.ckpt", steps=5)
    start.unlink()
    shards_command.main(["--source", "sklearn-digits", "--resolution", str(SIZE), "--limit", "40",
                         "--out", str(tmp / "digits")])
    return {"cgan": cgan, "gan": gan, "icgan": icgan, "shards": tmp / "digits", "tmp": tmp}


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def tile(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    top, left = PAD + row * (SIZE + PAD), PAD + col * (SIZE + PAD)
    return grid[top:top + SIZE, left:left + SIZE]


def grid_shape(rows: int, cols: int) -> tuple[int, int]:
    return rows * (SIZE + PAD) + PAD, cols * (SIZE + PAD) + PAD


def first_shard_pngs(folder, count: int) -> list[bytes]:
    with tarfile.open(folder / "shard-000000.tar") as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")][:count]


def test_per_class_grid_has_one_row_per_class_of_the_models_samples(made):
    out = made["tmp"] / "classes.png"
    main(["sample", "--ckpt", made["cgan"], "--per-class", "4", "--seed", "3", "--out", str(out)])
    grid = read_png(out)
    assert grid.shape == grid_shape(CLASSES, 4)
    model = load_module(made["cgan"])
    expected = model.sample(CLASSES * 4, labels=per_class_labels(CLASSES, 4), seed=3)
    assert np.array_equal(grid, make_grid(expected, nrow=4)[..., 0])
    rows = [np.stack([tile(grid, r, c) for c in range(4)]) for r in range(CLASSES)]
    assert not np.array_equal(rows[0], rows[1])

    main(["sample", "--ckpt", made["cgan"], "--per-class", "2", "--out", str(made["tmp"] / "classes.pt")])
    assert torch.load(made["tmp"] / "classes.pt").shape == (CLASSES * 2, 1, SIZE, SIZE)


def test_an_icgan_checkpoint_reloads_without_the_gan_checkpoint_it_started_from(made):
    started_from = torch.load(made["icgan"], weights_only=True)["hyper_parameters"]["generator_checkpoint"]
    assert started_from == str(made["tmp"] / "start.ckpt") and not (made["tmp"] / "start.ckpt").exists()
    icgan, cgan = load_module(made["icgan"]), load_module(made["cgan"])
    ema = cgan.generator_ema.state_dict()
    assert all(torch.equal(value, ema[key]) for key, value in icgan.generator.state_dict().items())
    assert not icgan.generator.training


def test_edit_grid_rows_are_image_reconstruction_then_one_edit_per_class(made):
    out = made["tmp"] / "edits.png"
    main(["sample", "--ckpt", made["icgan"], "--edit-class", "--images", str(made["shards"]), "--num", "5",
          "--out", str(out)])
    grid = read_png(out)
    assert grid.shape == grid_shape(5, 2 + CLASSES)
    pngs = first_shard_pngs(made["shards"], 5)
    reals = [np.asarray(Image.open(io.BytesIO(png))) for png in pngs]
    model = load_module(made["icgan"])
    x = torch.stack([decode_image(png, SIZE, 1) for png in pngs])
    _, predicted = model.encode(x)
    recon = make_grid(model.reconstruct(x), nrow=1)[..., 0]
    for i in range(5):
        assert np.array_equal(tile(grid, i, 0), reals[i])  # the input as it came from the shards
        assert np.array_equal(tile(grid, i, 1), tile(recon, i, 0))
        edits = [tile(grid, i, 2 + c) for c in range(CLASSES)]
        assert all(not np.array_equal(edits[a], edits[b]) for a in range(CLASSES) for b in range(a))
        assert np.array_equal(edits[predicted[i]], tile(grid, i, 1))  # its own class: the reconstruction
    assert torch.equal(model.edit(x, predicted), model.reconstruct(x))

    # Chosen classes, in the order given; the same image, the same edit.
    main(["sample", "--ckpt", made["icgan"], "--edit-class", "2", "0", "--images", str(made["shards"]),
          "--num", "5", "--out", str(made["tmp"] / "two.png")])
    two = read_png(made["tmp"] / "two.png")
    assert two.shape == grid_shape(5, 4)
    assert all(np.array_equal(tile(two, i, 2), tile(grid, i, 4)) and np.array_equal(tile(two, i, 3),
               tile(grid, i, 2)) for i in range(5))


def test_edit_inputs_can_be_image_files_decoded_like_training_data(made):
    rng = np.random.default_rng(0)
    files = []
    for i, size in enumerate([(24, 20), (16, 16)]):
        files.append(made["tmp"] / f"photo{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(files[-1])
    out = made["tmp"] / "files.pt"
    main(["sample", "--ckpt", made["icgan"], "--edit-class", "1", "--images", *map(str, files), "--out", str(out)])
    edits = torch.load(out)
    assert edits.shape == (2, 3, 1, SIZE, SIZE)
    for i, path in enumerate(files):
        assert torch.equal(edits[i, 0], decode_image(path.read_bytes(), SIZE, 1))


@pytest.mark.parametrize("args, message", [
    (["--ckpt", "{gan}", "--per-class", "4"], "--per-class: checkpoint {gan} holds an unconditional generator"),
    (["--ckpt", "{cgan}", "--edit-class", "--images", "{shards}"],
     "--edit-class: checkpoint {cgan} holds GAN, not IcGAN"),
    (["--ckpt", "{tmp}/missing.ckpt", "--per-class", "4"], "checkpoint {tmp}/missing.ckpt does not exist"),
    (["--ckpt", "{icgan}", "--edit-class", "3", "--images", "{shards}"],
     "--edit-class 3: the IcGAN knows classes 0..2"),
    (["--ckpt", "{icgan}", "--edit-class"], "--edit-class needs --images"),
    (["--ckpt", "{icgan}", "--edit-class", "--images", "{tmp}"], "--images {tmp}: no shards.json in this folder"),
    (["--ckpt", "{icgan}", "--edit-class", "--images", "{tmp}/cgan.ckpt"], "cgan.ckpt: not a readable image"),
    (["--ckpt", "{icgan}"], "holds IcGAN, which does not sample: use --edit-class"),
    (["--ckpt", "{cgan}", "--per-class", "2", "--num", "5"], "--per-class 2 fixes the count"),
])
def test_misuse_is_one_line_naming_the_input(made, args, message):
    names = {key: str(made[key]) for key in ("gan", "cgan", "icgan", "shards", "tmp")}
    with pytest.raises(SystemExit) as stopped:
        main(["sample", *(a.format(**names) for a in args), "--out", str(made["tmp"] / "never.png")])
    text = str(stopped.value)
    assert text.startswith("ganforge sample: error: ") and message.format(**names) in text and "\n" not in text
    assert not (made["tmp"] / "never.png").exists()
