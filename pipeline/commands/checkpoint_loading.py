"""Load a trained module from a checkpoint written by ``ganforge fit``, with errors that say what to do."""

from __future__ import annotations

import importlib
from pathlib import Path

import fsspec
import pytorch_lightning as pl
import torch


def load_module(ckpt: str, map_location: str = "cpu") -> pl.LightningModule:
    """The LightningModule saved in ``ckpt`` (local path or fsspec URL; a GAN variant, IcGAN, ...), rebuilt
    from the config inside it."""
    fs, path = fsspec.core.url_to_fs(ckpt)
    if not fs.exists(path):
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist: pass the .ckpt written by `ganforge fit` "
                                f"(e.g. <run dir>/checkpoints/last.ckpt)")
    with fs.open(path, "rb") as f:
        try:
            header = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
            raise ValueError(f"checkpoint {ckpt} is not a readable ganforge checkpoint ({err.__class__.__name__}:"
                             f" {str(err).splitlines()[0]}); re-save it with `ganforge fit`") from None
    class_path = header.get("hyper_parameters", {}).get("_class_path")
    if class_path is None:
        raise ValueError(f"checkpoint {ckpt} was not written by `ganforge fit` (no model config inside it)")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        raise ValueError(f"checkpoint {ckpt} names model {class_path}, which is not a LightningModule")
    local = Path(path) if fs.protocol in ("file", ("file", "local")) else None
    source = str(local) if local is not None else fs.open(path, "rb")
    return cls.load_from_checkpoint(source, map_location=map_location, weights_only=True)
