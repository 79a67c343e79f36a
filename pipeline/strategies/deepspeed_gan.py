"""DeepSpeed for two players: one engine per optimizer (``strategy="deepspeed_gan"``).

Lightning's DeepSpeedStrategy wraps the module in a single engine with a single optimizer, so it cannot run a
GAN. Here, as in DeepSpeedExamples' GAN, the generator and the discriminator each get an engine (ZeRO stage
0, 1 or 2, optional optimizer offload to CPU) built around the optimizer the module configured for it. The
module still calls its networks directly (engines are never called: an engine's forward hooks would object
to the other player's backward running through it); ganforge's game hands each backward its optimizer, which
names the engine that runs it, and each optimizer step becomes that engine's step. Gradient clipping per
player is the engine's (``gradient_clipping``, from the module's grad_clip_g / grad_clip_d).

Precision: the engines keep fp32 weights; ``trainer.precision="bf16-mixed"`` runs the forward passes under
autocast. DeepSpeed's own fp16/bf16 weight modes are refused (they cast the networks and need engine-called
forwards).

Checkpoints are directories: each rank's engine shards (``generator/`` and ``discriminator/`` tags) plus
``lightning.pt`` with the rest of the training state, written to ``<path>.tmp`` and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.strategies import StrategyRegistry
from pytorch_lightning.trainer.states import TrainerFn

from pipeline.strategies.two_player_ddp import TwoPlayerDDPStrategy

NAME = "deepspeed_gan"
_TAGS = ("generator", "discriminator")
_SUPPORTED_PRECISION = {"32-true", "bf16-mixed"}


class DeepSpeedGANStrategy(TwoPlayerDDPStrategy):
    """Args:
        zero_stage: ZeRO stage 0, 1 (optimizer states partitioned) or 2 (and gradients). Stage 3 partitions
            parameters, which the module reads directly (EMA, sampling): refused.
        offload_optimizer: keep optimizer states on CPU (ZeRO-Offload; stage 1/2).
        config: extra DeepSpeed config entries merged over the generated ones (a dict or a JSON file path).
        Other arguments as TwoPlayerDDPStrategy's (process set-up).
    """

    strategy_name = NAME

    def __init__(self, *args: Any, zero_stage: int = 1, offload_optimizer: bool = False,
                 config: dict | str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if zero_stage not in (0, 1, 2):
            raise ValueError(f"deepspeed_gan: zero_stage={zero_stage} is not supported; use 0, 1 or 2 "
                             "(stage 3 partitions the parameters that the GAN reads directly for EMA and sampling)")
        if offload_optimizer and zero_stage == 0:
            raise ValueError("deepspeed_gan: offload_optimizer needs zero_stage 1 or 2")
        self.zero_stage, self.offload_optimizer, self.extra_config = zero_stage, offload_optimizer, config
        self.engines: dict[int, Any] = {}  # id(engine optimizer) -> engine

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True  # engines must exist before their shards can be loaded

    # ---- set-up ---------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        precision = str(trainer.precision)
        if precision not in _SUPPORTED_PRECISION:
            raise ValueError(f"deepspeed_gan: trainer.precision={precision} is not supported; use one of "
                             f"{sorted(_SUPPORTED_PRECISION)} (16-bit weights would need engine-called forwards)")
        super().setup(trainer)

    def setup_optimizers(self, trainer) -> None:
        super().setup_optimizers(trainer)
        if trainer.state.fn != TrainerFn.FITTING:
            return
        import deepspeed

        module = self.lightning_module
        if len(self.optimizers) != 2:
            raise ValueError("deepspeed_gan needs a module with two optimizers (generator, discriminator)")
        hp = module.hparams
        wrapped = []
        for tag, optimizer, clip in zip(_TAGS, self.optimizers, (hp.grad_clip_g, hp.grad_clip_d), strict=True):
            engine, engine_optimizer, _, _ = deepspeed.initialize(
                model=_PlayerModules(module, tag), optimizer=optimizer, config=self._config(clip),
                dist_init_required=False)
            self.engines[id(engine_optimizer)] = engine
            wrapped.append(engine_optimizer)
        self.optimizers = wrapped

    def _config(self, clip: float | None) -> dict:
        config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": 1,  # unused: ganforge feeds the engines itself
            "gradient_accumulation_steps": 1,
            "zero_allow_untested_optimizer": True,
            "zero_optimization": {"stage": self.zero_stage},
            "steps_per_print": 2**31 - 1,
        }
        if clip is not None:
            config["gradient_clipping"] = clip
        if self.offload_optimizer:
            config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
        if self.extra_config is not None:
            extra = self.extra_config
            if isinstance(extra, str):
                import json

                extra = json.loads(Path(extra).read_text())
            config.update(extra)
        for key in ("fp16", "bf16"):
            if config.get(key, {}).get("enabled"):
                raise ValueError(f"deepspeed_gan: DeepSpeed's {key} mode is not supported; "
                                 f"set trainer.precision=bf16-mixed instead")
        return config

    # ---- the step -------------------------------------------------------------------------------
    def engine_for(self, optimizer) -> Any:
        engine = self.engines.get(id(optimizer))
        if engine is None:
            raise RuntimeError("deepspeed_gan: backward/step called with an optimizer that no engine owns; call "
                               "strategy.backward(loss, optimizer) as ganforge's GAN does")
        return engine

    def backward(self, closure_loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.engine_for(optimizer).backward(closure_loss)
        return closure_loss

    def optimizer_step(self, optimizer, closure: Callable[[], Any], model=None, **kwargs: Any) -> Any:
        result = closure()
        self.engine_for(optimizer).step()
        return result

    # ---- checkpoints ----------------------------------------------------------------------------
    def optimizer_state(self, optimizer) -> dict:
        return {}  # the engines save their (partitioned) optimizer states themselves

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        final = Path(filepath)
        tmp = final.with_name(final.name + ".tmp")
        if self.is_global_zero and tmp.exists():
            shutil.rmtree(tmp)
        self.barrier("deepspeed_gan.save.begin")
        for engine, tag in zip(self.engines.values(), _TAGS, strict=True):
            engine.save_checkpoint(str(tmp), tag=tag, save_latest=False)
        if self.is_global_zero:
            checkpoint = {k: v for k, v in checkpoint.items() if k != "optimizer_states"}
            torch.save(checkpoint, tmp / "lightning.pt")
        self.barrier("deepspeed_gan.save.written")
        if self.is_global_zero:
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(tmp, final)
        self.barrier("deepspeed_gan.save.end")

    def load_checkpoint(self, checkpoint_path) -> dict[str, Any]:
        path = Path(checkpoint_path)
        if not (path / "lightning.pt").is_file():
            raise FileNotFoundError(f"{path} is not a deepspeed_gan checkpoint directory (no lightning.pt inside); "
                                    f"resume with the strategy the run was trained with")
        for engine, tag in zip(self.engines.values(), _TAGS, strict=True):
            engine.load_checkpoint(str(path), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False)
        return torch.load(path / "lightning.pt", map_location="cpu", weights_only=True)

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        return None  # done by the engines in load_checkpoint

    def remove_checkpoint(self, filepath) -> None:
        if self.is_global_zero and Path(filepath).is_dir():
            shutil.rmtree(filepath)


class _PlayerModules(torch.nn.Module):
    """What one engine owns: the player's network(s), i.e. the parameters its optimizer steps."""

    def __init__(self, module: torch.nn.Module, tag: str):
        super().__init__()
        params = module.generator_parameters() if tag == "generator" else module.discriminator.parameters()
        self.params = torch.nn.ParameterList(list(params))


def register() -> None:
    StrategyRegistry.register(NAME, DeepSpeedGANStrategy, override=True,
                              description="DeepSpeed with one engine per player (ZeRO 0/1/2)")
