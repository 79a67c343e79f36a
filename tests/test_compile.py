"""model.compile: the players run torch.compile'd (here with the aot_eager backend: dynamo and AOTAutograd trace
and run the graphs, no C++ is generated), checkpoints keep the eager networks' keys, a compiled run resumes
bit-identically, and a compilation that fails (at torch.compile or lazily at a first call) leaves one warning
and an eager run with the very same weights."""

import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch._dynamo
from pytorch_lightning.callbacks import ModelCheckpoint

import modules.compile
from datamodules.mixture_datamodule import MixtureDataModule
from modules.gan import GAN
from modules.nets.mlp import MLPDiscriminator, MLPGenerator


def make_gan(**compile_args) -> GAN:
    torch.manual_seed(0)
    return GAN(MLPGenerator(latent_dim=2, hidden=16, layers=2, batch_norm=True),
               MLPDiscriminator(hidden=16, layers=2), r1_gamma=1.0, ema_kimg=0.5, noise_seed=3, **compile_args)


def fit(tmp_path, model: GAN, max_steps: int, ckpt_path=None, every: int = 0):
    callbacks = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1)] if every else []
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, callbacks=callbacks,
                         enable_checkpointing=bool(every), enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, MixtureDataModule(batch_size=16, batches_per_epoch=20, seed=5), ckpt_path=ckpt_path)
    return model


def assert_same_weights(a: GAN, b: GAN, atol: float = 0.0) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=name)


def test_compiled_fit_traces_the_players_keeps_eager_keys_and_resumes_exactly(tmp_path):
    torch._dynamo.reset()
    full = fit(tmp_path / "full", make_gan(compile=True, compile_backend="aot_eager"), 4, every=2)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs >= 3  # G; D with trainable and with frozen weights (R1 adds its input-gradient variant)
    eager = fit(tmp_path / "eager", make_gan(), 4)
    assert_same_weights(full, eager, atol=1e-6)  # the same computation, traced

    checkpoint = torch.load(next((tmp_path / "full").glob("*step=2.ckpt")), weights_only=False)
    assert list(checkpoint["state_dict"]) == list(make_gan().state_dict())  # no _orig_mod. wrapper keys
    resumed = fit(tmp_path / "resumed", make_gan(compile=True, compile_backend="aot_eager"), 4,
                  ckpt_path=str(next((tmp_path / "full").glob("*step=2.ckpt"))))
    assert_same_weights(full, resumed)


def raising_at_first_call(fn, **kwargs):
    """torch.compile as a failing backend behaves: the wrapper is made, the first call raises."""
    def compiled(*args, **kw):
        raise torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, RuntimeError("no C++ compiler"))
    return compiled


@pytest.mark.parametrize("failure", ["unknown backend", "lazy failure at the first call"])
def test_failed_compilation_warns_once_and_trains_as_eager(tmp_path, monkeypatch, failure):
    torch._dynamo.reset()
    if failure == "unknown backend":
        model = make_gan(compile=True, compile_backend="no_such_backend")
    else:
        monkeypatch.setattr(modules.compile.torch, "compile", raising_at_first_call)
        model = make_gan(compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, model, 3)
    compile_warnings = [w for w in caught if "model.compile" in str(w.message)]
    assert len(compile_warnings) == 1, [str(w.message) for w in compile_warnings]
    assert "training continues without it" in str(compile_warnings[0].message)
    assert model.generator._compiled_call_impl is None and model.discriminator._compiled_call_impl is None
    assert_same_weights(model, fit(tmp_path / "eager", make_gan(), 3))


def test_a_spectrally_normalised_discriminator_stays_eager_with_one_warning(tmp_path):
    torch._dynamo.reset()
    model = make_gan(compile=True, compile_backend="aot_eager", spectral_norm=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, model, 3)  # compiled, D's two forwards before one backward would fail in that backward
    messages = [str(w.message) for w in caught if "model.compile" in str(w.message)]
    assert len(messages) == 1 and "MLPDiscriminator has parametrized layers" in messages[0]
    assert model.discriminator._compiled_call_impl is None and model.generator._compiled_call_impl is not None
