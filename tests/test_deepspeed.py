"""deepspeed_gan: one DeepSpeed engine per player trains exactly what ddp_gan trains, and resumes exactly.

The 2-rank tests read one launch of tests/workers/deepspeed_fit.py (about 25 s on 2 busy cores: process
start-up dominates, so every fit runs in the same pair of processes). On CPU, DeepSpeed uses gloo and compiles
nothing: the module's torch optimizers are used, and the strategy keeps DeepSpeed from building its
inference-only shared-memory op (without that, the first launch on a machine spends minutes compiling).
The start-up errors are checked in-process, in milliseconds.
"""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from ddp_launch import run_ranks

from pipeline.strategies.deepspeed_gan import DeepSpeedGANStrategy

WORKER = Path(__file__).parent / "workers" / "deepspeed_fit.py"
MAX_STEPS, STOP_AT, N_CRITIC, BATCH, CLIP = 6, 4, 2, 32, 0.05  # as in the worker
NAN_D_STEPS = {3, 4}  # as in the worker
DEEPSPEED_RUNS = ("zero0", "zero1", "zero2", "zero2_offload", "zero2_bf16")
PER_RANK = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm statistics stay per rank


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("deepspeed")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DS_ACCELERATOR", "cpu")
        env.setenv("TORCH_EXTENSIONS_DIR", str(out / "torch_extensions"))
        run_ranks([str(WORKER), str(out)], timeout=300)
    return out, [torch.load(out / f"rank{rank}.pt") for rank in (0, 1)]


def weights(state: dict) -> dict:
    return {name: tensor for name, tensor in state.items() if not name.endswith(PER_RANK)}


def assert_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    unequal = [name for name in a if not torch.equal(a[name], b[name])]
    assert not unequal, f"{what}: {unequal}"


@pytest.mark.slow
@pytest.mark.parametrize("run", [*DEEPSPEED_RUNS, "ddp_gan"])
def test_both_players_train_and_ranks_stay_equal(launch, run):
    _, ranks = launch
    rank0, rank1 = ranks[0][run], ranks[1][run]
    assert rank0["counters"] == rank1["counters"] == (MAX_STEPS, N_CRITIC * MAX_STEPS, N_CRITIC * MAX_STEPS * BATCH * 2)
    assert_equal(weights(rank0["state"]), weights(rank1["state"]), f"{run}: ranks differ in")
    for player in ("generator.", "discriminator.", "generator_ema."):
        moved = [name for name, tensor in weights(rank0["state"]).items()
                 if name.startswith(player) and not torch.equal(tensor, rank0["initial"][name])]
        assert moved, f"{run}: no {player[:-1]} weight moved"
    assert all(torch.isfinite(tensor).all() for tensor in rank0["state"].values())


@pytest.mark.slow
@pytest.mark.parametrize("run", DEEPSPEED_RUNS)
def test_each_player_steps_only_its_own_engine_with_only_its_own_gradients(launch, run):
    _, ranks = launch
    for rank in ranks:
        assert rank[run]["engine_steps"] == [MAX_STEPS, N_CRITIC * MAX_STEPS]  # generator engine, discriminator's
        assert set(rank[run]["grads"]) == {"D step -> discriminator", "G step -> generator"}


@pytest.mark.slow
@pytest.mark.parametrize("run", ["zero0", "zero1", "zero2", "zero2_offload"])
def test_zero_trains_bit_identically_to_ddp_gan(launch, run):
    _, ranks = launch
    for rank in ranks:
        assert_equal(weights(rank[run]["state"]), weights(rank["ddp_gan"]["state"]), f"{run} vs ddp_gan")


@pytest.mark.slow
def test_bf16_mixed_stays_close_to_fp32(launch):
    _, ranks = launch
    bf16, fp32 = weights(ranks[0]["zero2_bf16"]["state"]), weights(ranks[0]["ddp_gan"]["state"])
    drift = max((bf16[name] - fp32[name]).abs().max().item() for name in fp32)
    assert 0 < drift < 1e-2  # measured 3e-3 after 6 steps at lr 1e-3: autocast ran, and nothing diverged


@pytest.mark.slow
@pytest.mark.parametrize("run", ["zero0_clip", "zero2_clip"])
def test_engine_clipping_is_the_modules_clipping(launch, run):
    _, ranks = launch
    assert min(ranks[0]["ddp_gan_clip"]["norms"]) > CLIP  # every step of both players was clipped
    deepspeed, ddp = weights(ranks[0][run]["state"]), weights(ranks[0]["ddp_gan_clip"]["state"])
    # measured 1.5e-11 on one CPU, 1.5e-8 (an ulp of float32) on another; a clipped SGD step moves them up to 5e-4
    assert max((deepspeed[name] - ddp[name]).abs().max().item() for name in ddp) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("run", ["zero0_clip", "zero2_clip"])
def test_engine_runs_log_the_gradient_norms_the_module_logs_under_ddp(launch, run):
    _, ranks = launch
    logged, reference = ranks[0][run]["logged_norms"], ranks[0]["ddp_gan_clip"]["logged_norms"]
    assert [player for player, _ in reference] == ["d", "d", "g"] * MAX_STEPS  # n_critic=2, logged every batch
    assert [player for player, _ in logged] == [player for player, _ in reference]
    assert [norm for _, norm in logged] == pytest.approx([norm for _, norm in reference], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2])
def test_a_nan_step_on_one_rank_is_skipped_by_every_rank(launch, stage):
    _, ranks = launch
    runs = [rank[f"zero{stage}_nan"] for rank in ranks]
    assert [run["skipped"] for run in runs] == [{"g": 0, "d": len(NAN_D_STEPS)}] * 2
    assert_equal(weights(runs[0]["state"]), weights(runs[1]["state"]), f"zero{stage}_nan: ranks differ in")
    before = runs[1]["d_weights"]  # rank 1's reals were finite: it skipped because rank 0's were not
    for step in range(len(before) - 1):
        kept = all(torch.equal(a, b) for a, b in zip(before[step], before[step + 1], strict=True))
        assert kept == (step in NAN_D_STEPS), (stage, step)
    assert all(torch.isfinite(tensor).all() for tensor in runs[0]["state"].values())


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_resume_continues_bit_identically_at_the_same_generator_step(launch, stage):
    out, ranks = launch
    checkpoints = out / f"zero{stage}_checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [f"epoch=0-step={STOP_AT}.ckpt"]  # no .tmp left
    assert {"generator", "discriminator", "lightning.pt"} <= {p.name for p in checkpoints.glob("*/*")}
    for rank, results in enumerate(ranks):
        full, resumed = results[f"zero{stage}"], results[f"zero{stage}_resumed"]
        assert resumed["counters"] == full["counters"]
        assert resumed["engine_steps"] == full["engine_steps"]
        # checkpoints hold rank 0's BatchNorm statistics (as under ddp_gan); everything else resumes exactly
        assert_equal(full["state"] if rank == 0 else weights(full["state"]),
                     resumed["state"] if rank == 0 else weights(resumed["state"]), f"rank {rank}: resume differs in")


@pytest.mark.slow
@pytest.mark.parametrize("error, message", [
    ("adafactor_error", "deepspeed_gan: optimizer Adafactor is not supported with ZeRO-1, which steps a flat "
                        "partition of each player's weights; use Adam, AdamW, RMSprop or SGD, or zero_stage=0"),
    ("channels_last_error", "deepspeed_gan: model.channels_last is not supported with ZeRO-1, whose weights are "
                            "views of one flat buffer; set model.init_args.channels_last=false or zero_stage=0"),
])
def test_what_zero_cannot_partition_is_refused_on_every_rank(launch, error, message):
    _, ranks = launch
    assert [rank.get(error) for rank in ranks] == [message, message]


@pytest.mark.parametrize("kwargs, message", [
    ({"zero_stage": 3}, "zero_stage=3 is not supported; use 0, 1 or 2"),
    ({"config": {"zero_optimization": {"stage": 3}}}, "zero_stage=3 is not supported; use 0, 1 or 2"),
    ({"zero_stage": 0, "offload_optimizer": True}, "offload_optimizer needs zero_stage 1 or 2"),
    ({"config": {"fp16": {"enabled": True}}}, "config key 'fp16' is not supported; set trainer.precision=bf16-mixed"),
    ({"config": {"bf16": {"enabled": True}}}, "config key 'bf16' is not supported; set trainer.precision=bf16-mixed"),
    ({"config": {"optimizer": {"type": "Adam"}}}, "config key 'optimizer' is not supported; the module's"),
    ({"config": {"gradient_clipping": 1.0}}, "config key 'gradient_clipping' is not supported; set model.grad_clip_g"),
])
def test_refused_options_fail_at_construction_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match="^deepspeed_gan: ") as err:
        DeepSpeedGANStrategy(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_file_is_merged_under_the_generated_config(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 1000}, "wall_clock_breakdown": True}))
    strategy = DeepSpeedGANStrategy(zero_stage=2, config=str(path))
    assert strategy.config["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000}
    assert strategy.config["wall_clock_breakdown"] is True


@pytest.mark.parametrize("precision", ["16-true", "bf16-true", "64-true"])
def test_refused_precision_fails_when_the_trainer_is_built(precision):
    with pytest.raises(ValueError, match=f"^deepspeed_gan: trainer.precision={precision} is not supported; use "
                                         "32-true or bf16-mixed") as err:
        pl.Trainer(accelerator="cpu", devices=2, strategy=DeepSpeedGANStrategy(), precision=precision, logger=False,
                   enable_progress_bar=False)
    assert "\n" not in str(err.value)


def test_resume_refuses_a_directory_that_is_not_a_deepspeed_gan_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a deepspeed_gan checkpoint directory"):
        DeepSpeedGANStrategy().load_checkpoint(tmp_path)
    torch.save({"deepspeed_gan": {"world_size": 4, "zero_stage": 1}}, tmp_path / "lightning.pt")
    with pytest.raises(ValueError, match="holds ZeRO shards for .*; resume with the same trainer.devices x num_nodes"):
        DeepSpeedGANStrategy(zero_stage=1).load_checkpoint(tmp_path)


@pytest.mark.slow
def test_no_deepspeed_op_was_compiled(launch):
    out, _ = launch
    assert not (out / "torch_extensions").exists()  # a compile would cost minutes per fresh machine
