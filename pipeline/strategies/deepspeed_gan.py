"""DeepSpeed for two players: one engine per optimizer (``strategy="deepspeed_gan"``).

Lightning's DeepSpeedStrategy wraps the module in a single engine with a single optimizer, so it cannot run a
GAN. Here, as in DeepSpeedExamples' GAN, the generator and the discriminator each get an engine (ZeRO stage
0, 1 or 2, optional optimizer offload to CPU) built around the optimizer the module configured for it. The
module still calls its networks directly (engines are never called: an engine's forward hooks would object
to the other player's backward running through it); ganforge's game hands each backward its optimizer, which
names the engine that runs it, and each optimizer step becomes that engine's step. Gradient clipping per
player is the engine's (``gradient_clipping``, from the module's grad_clip_g / grad_clip_d), so the module's
``on_before_optimizer_step`` is not called (under ZeRO-2 the gradients it would read live in the partitions);
instead the module's ``on_engine_step`` gets a reader of the player's gradient norm (for gradnorm/ logging and
the step health check: with ZeRO-0 before the engine's step, which is not taken when the module skips; ZeRO-1/2
skip a step whose global norm is NaN/Inf themselves, and the module is told so after the step). Without
grad_clip_g / grad_clip_d the engines do not clip (DeepSpeed's own default would clip at 1.0).

Precision: the engines keep fp32 weights; ``trainer.precision="bf16-mixed"`` runs the forward passes under
autocast. DeepSpeed's own fp16/bf16 weight modes are refused (they cast the networks and need engine-called
forwards). With ``offload_optimizer`` the module's own torch optimizer steps the CPU partitions (no compiled
DeepSpeedCPUAdam: no op build, and LR schedulers keep stepping the optimizer they were given).

Checkpoints are directories: each rank's engine shards (``generator/`` and ``discriminator/`` tags) plus
``lightning.pt`` with the rest of the training state, written to ``<path>.tmp`` and renamed when complete.
The directory must be on storage every rank sees; ZeRO-1/2 shards resume only on the same number of ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.strategies import StrategyRegistry
from pytorch_lightning.trainer.states import TrainerFn

from modules.gan import global_norm
from pipeline.strategies.two_player_ddp import TwoPlayerDDPStrategy

NAME = "deepspeed_gan"
_TAGS = ("generator", "discriminator")
_SUPPORTED_PRECISION = ("32-true", "bf16-mixed")
# ZeRO-1/2 step each player's parameters as one flat partition: right only for element-wise update rules.
_ELEMENTWISE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD,
                           torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)
_MODULE_OWNED_KEYS = {"optimizer": "the module's configure_optimizers builds each player's optimizer",
                      "scheduler": "the module's configure_optimizers builds the LR schedules",
                      "gradient_clipping": "set model.grad_clip_g / model.grad_clip_d per player",
                      "fp16": "set trainer.precision=bf16-mixed", "bf16": "set trainer.precision=bf16-mixed"}


class DeepSpeedGANStrategy(TwoPlayerDDPStrategy):
    """Args:
        zero_stage: ZeRO stage 0, 1 (optimizer states partitioned) or 2 (and gradients). Stage 3 partitions
            parameters, which the module reads directly (EMA, sampling): refused.
        offload_optimizer: keep optimizer states on CPU (ZeRO-Offload; stage 1/2).
        config: extra DeepSpeed config entries merged over the generated ones (a dict or a JSON file path;
            ``zero_optimization`` entries are merged key by key).
        Other arguments as TwoPlayerDDPStrategy's (process set-up).
    """

    strategy_name = NAME

    def __init__(self, *args: Any, zero_stage: int = 1, offload_optimizer: bool = False,
                 config: dict | str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config = _engine_config(zero_stage, offload_optimizer, config)
        self.zero_stage = self.config["zero_optimization"]["stage"]
        self.engines: dict[int, Any] = {}  # id(engine optimizer) -> engine

    def _set_precision_plugin(self, plugin) -> None:
        """Checked when the Trainer hands over its precision, so a bad combination fails before any process
        starts."""
        if plugin is not None and plugin.precision not in _SUPPORTED_PRECISION:
            raise ValueError(f"deepspeed_gan: trainer.precision={plugin.precision} is not supported; use "
                             f"{' or '.join(_SUPPORTED_PRECISION)} (16-bit weights would need engine-called forwards)")
        self._precision_plugin = plugin

    precision_plugin = property(TwoPlayerDDPStrategy.precision_plugin.fget, _set_precision_plugin)

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True  # engines must exist before their shards can be loaded

    # ---- set-up ---------------------------------------------------------------------------------
    def setup_optimizers(self, trainer) -> None:
        super().setup_optimizers(trainer)
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if len(self.optimizers) != 2:
            raise ValueError(f"deepspeed_gan: needs a module with two optimizers (generator, discriminator), "
                             f"got {len(self.optimizers)}")
        hp = self.lightning_module.hparams
        if self.zero_stage > 0:
            if hp.get("channels_last"):
                raise ValueError(f"deepspeed_gan: model.channels_last is not supported with ZeRO-{self.zero_stage}, "
                                 f"whose weights are views of one flat buffer; set model.init_args.channels_last=false "
                                 f"or zero_stage=0")
            for optimizer in self.optimizers:
                if not isinstance(optimizer, _ELEMENTWISE_OPTIMIZERS):
                    raise ValueError(f"deepspeed_gan: optimizer {type(optimizer).__name__} is not supported with "
                                     f"ZeRO-{self.zero_stage}, which steps a flat partition of each player's weights; "
                                     f"use Adam, AdamW, RMSprop or SGD, or zero_stage=0")
        import deepspeed

        _skip_cpu_inference_ops(self.root_device)
        os.environ["LOCAL_RANK"] = str(self.local_rank)  # DeepSpeed reads it; SLURM does not export it
        device_rank = self.root_device.index if self.root_device.index is not None else self.local_rank
        self.engines, wrapped = {}, []
        for optimizer, clip in zip(self.optimizers, (hp.get("grad_clip_g"), hp.get("grad_clip_d")), strict=True):
            config = dict(self.config, gradient_clipping=0.0 if clip is None else clip)  # DeepSpeed's default: 1.0
            engine, engine_optimizer, _, _ = deepspeed.initialize(
                args=argparse.Namespace(device_rank=device_rank), model=_PlayerParameters(optimizer),
                optimizer=optimizer, config=config, dist_init_required=False)
            self.engines[id(engine_optimizer)] = engine
            wrapped.append(engine_optimizer)
        self.optimizers = wrapped

    # ---- the step -------------------------------------------------------------------------------
    def engine_for(self, optimizer) -> Any:
        engine = self.engines.get(id(optimizer))
        if engine is None:
            raise RuntimeError("deepspeed_gan: backward/step called with an optimizer that no engine owns; call "
                               "strategy.backward(loss, optimizer) as ganforge's GAN does")
        return engine

    def backward(self, closure_loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any) -> torch.Tensor:
        engine = self.engine_for(optimizer)
        module = self.lightning_module
        self.pre_backward(closure_loss)
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)  # on_before_backward
        engine.backward(closure_loss)
        closure_loss = self.precision_plugin.post_backward(closure_loss, module)  # on_after_backward
        self.post_backward(closure_loss)
        return closure_loss

    def optimizer_step(self, optimizer, closure: Callable[[], Any], model=None, **kwargs: Any) -> Any:
        result = closure()
        engine = self.engine_for(optimizer)
        report = getattr(self.lightning_module, "on_engine_step", None)
        if report is not None and self.zero_stage == 0:  # full gradients: checked before the step
            gradients = self.gradients(optimizer)
            if report(optimizer, lambda: global_norm(gradients) if gradients else None):
                return result  # skipped (NaN/Inf): the module dropped the gradients, the engine does not step
        engine.step()
        if report is not None and self.zero_stage > 0:  # ZeRO-1/2 skip a NaN/Inf global norm themselves, and keep it
            report(optimizer, engine.get_global_grad_norm, skipped=bool(getattr(engine.optimizer, "overflow", False)))
        return result

    # ---- checkpoints ----------------------------------------------------------------------------
    def optimizer_state(self, optimizer) -> dict:
        return {}  # the engines save their (partitioned) optimizer states themselves

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        final = Path(filepath)
        tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
        if self.is_global_zero:
            for stale in (tmp, old):
                _remove(stale)
        self.barrier("deepspeed_gan.save.begin")
        for engine, tag in zip(self.engines.values(), _TAGS, strict=True):
            engine.save_checkpoint(str(tmp), tag=tag, save_latest=False)
        if self.is_global_zero:
            checkpoint = {**checkpoint, NAME: {"world_size": self.world_size, "zero_stage": self.zero_stage}}
            self.checkpoint_io.save_checkpoint(checkpoint, tmp / "lightning.pt")
        self.barrier("deepspeed_gan.save.written")
        if self.is_global_zero:  # a crash at any point leaves a complete checkpoint at final, or at .old
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        self.barrier("deepspeed_gan.save.end")

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(checkpoint_path)
        if not (path / "lightning.pt").is_file():
            raise FileNotFoundError(f"{path} is not a deepspeed_gan checkpoint directory (no lightning.pt inside); "
                                    f"resume with the strategy the run was trained with")
        checkpoint = self.checkpoint_io.load_checkpoint(path / "lightning.pt", weights_only=weights_only)
        saved, current = checkpoint.get(NAME, {}), {"world_size": self.world_size, "zero_stage": self.zero_stage}
        if saved != current and (self.zero_stage or saved.get("zero_stage")):
            raise ValueError(f"{path} holds ZeRO shards for {saved}, this run is {current}; resume with the same "
                             f"trainer.devices x num_nodes and zero_stage")
        for engine, tag in zip(self.engines.values(), _TAGS, strict=True):
            loaded, _ = engine.load_checkpoint(str(path), tag=tag, load_optimizer_states=True,
                                               load_lr_scheduler_states=False)
            if loaded is None:
                raise FileNotFoundError(f"{path}: DeepSpeed found no complete '{tag}' shards in it")
        return checkpoint

    @property
    def lightning_restore_optimizer(self) -> bool:
        return False  # the engines restore their optimizer shards in load_checkpoint

    def remove_checkpoint(self, filepath) -> None:
        if self.is_global_zero:
            _remove(Path(filepath))


def _engine_config(zero_stage: int, offload_optimizer: bool, extra: dict | str | None) -> dict[str, Any]:
    """The DeepSpeed config both engines share (gradient_clipping is added per player), validated up front."""
    if isinstance(extra, str):
        extra = json.loads(Path(extra).read_text())
    extra = dict(extra or {})
    for key, fix in _MODULE_OWNED_KEYS.items():
        if key in extra:
            raise ValueError(f"deepspeed_gan: config key {key!r} is not supported; {fix}")
    zero = {"stage": zero_stage, **extra.pop("zero_optimization", {})}
    if zero["stage"] not in (0, 1, 2):
        raise ValueError(f"deepspeed_gan: zero_stage={zero['stage']} is not supported; use 0, 1 or 2 "
                         "(stage 3 partitions the parameters that the GAN reads directly for EMA and sampling)")
    if offload_optimizer:
        if zero["stage"] == 0:
            raise ValueError("deepspeed_gan: offload_optimizer needs zero_stage 1 or 2")
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": 1,  # unused: ganforge feeds the engines itself
        "gradient_accumulation_steps": 1,
        "zero_allow_untested_optimizer": True,  # setup_optimizers admits element-wise optimizers only
        "zero_force_ds_cpu_optimizer": False,  # offload steps the module's own optimizer
        "steps_per_print": 2**31 - 1,
        **extra,
        "zero_optimization": zero,
    }


def _skip_cpu_inference_ops(device: torch.device) -> None:
    """On CPU, DeepSpeed's communication backend compiles a shared-memory all-reduce op when it starts (minutes
    on a small machine) that only its inference kernels call; training all-reduces through torch.distributed."""
    if device.type == "cpu":
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class _PlayerParameters(torch.nn.Module):
    """What one engine owns: exactly the parameters its optimizer steps."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        super().__init__()
        self.params = torch.nn.ParameterList([p for group in optimizer.param_groups for p in group["params"]])


def register() -> None:
    StrategyRegistry.register(NAME, DeepSpeedGANStrategy, override=True,
                              description="DeepSpeed with one engine per player (ZeRO 0/1/2)")
