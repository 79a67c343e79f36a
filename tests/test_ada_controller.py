"""ADA's p controller driven by synthetic discriminator scores: direction, exact step, clamping, state."""

import json
import socket

import pytest
import torch

from modules.augment import AdaptiveAugment
from modules.augment.ada_controller import AdaController
from tests.ddp_launch import run_ranks


def feed(controller: AdaController, scores: list[float], steps: int, batch: int = 32) -> list[float]:
    """Observe ``steps`` D steps of the same real scores; p after each."""
    history = []
    for _ in range(steps):
        controller.observe(torch.tensor(scores), batch)
        history.append(float(controller.p))
    return history


def test_overconfident_d_raises_p_by_batch_times_interval_over_ada_kimg():
    controller = AdaController(p=0.25, target=0.6, ada_kimg=2.0, interval=4)
    history = feed(controller, [3.0, 0.1, 2.0, 5.0], steps=8, batch=32)  # all positive: r_t = 1 > 0.6
    step = 32 * 4 / (2.0 * 1000)  # 0.064
    assert history[:3] == [0.25] * 3  # no update inside an interval
    assert history[3] == pytest.approx(0.25 + step, abs=1e-7) and history[4:7] == [history[3]] * 3
    assert history[7] == pytest.approx(0.25 + 2 * step, abs=1e-7)
    assert float(controller.rt) == 1.0


def test_a_generalising_d_lowers_p():
    controller = AdaController(p=0.5, target=0.6, ada_kimg=1.0, interval=2)
    # 6 of 10 reals scored positive and 4 negative: r_t = 0.2 < 0.6
    history = feed(controller, [1.0] * 6 + [-1.0] * 4, steps=2, batch=10)
    assert history[1] == pytest.approx(0.5 - 10 * 2 / 1000, abs=1e-7)
    assert float(controller.rt) == pytest.approx(0.2)


def test_r_t_at_the_target_leaves_p_and_zero_scores_count_as_neither_sign():
    controller = AdaController(p=0.5, target=0.5, ada_kimg=1.0, interval=1)
    feed(controller, [1.0, 1.0, 1.0, 0.0, -1.0, 1.0], steps=3)  # (4 - 1) / 6 = 0.5
    assert float(controller.p) == 0.5 and float(controller.rt) == 0.5


def test_p_is_clamped_to_the_unit_interval():
    up = AdaController(p=0.999, ada_kimg=1.0, interval=1)
    assert feed(up, [1.0], steps=3, batch=64) == [1.0, 1.0, 1.0]
    down = AdaController(p=0.001, ada_kimg=1.0, interval=1)
    assert feed(down, [-1.0], steps=3, batch=64) == [0.0, 0.0, 0.0]


def test_fixed_mode_measures_r_t_but_keeps_p():
    controller = AdaController(p=0.3, adaptive=False, interval=2)
    feed(controller, [1.0, -1.0, 1.0, 1.0], steps=4)
    assert float(controller.p) == pytest.approx(0.3) and float(controller.rt) == 0.5


def test_state_survives_a_state_dict_round_trip_mid_interval():
    a = AdaController(p=0.2, ada_kimg=1.0, interval=4)
    feed(a, [1.0, 2.0], steps=6)  # one update, then two steps into the next interval
    b = AdaController(p=0.0, ada_kimg=1.0, interval=4)
    b.load_state_dict(a.state_dict())
    assert feed(a, [1.0, -1.0, 1.0], steps=5) == feed(b, [1.0, -1.0, 1.0], steps=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_half_precision_casts_keep_the_state_in_float32():
    controller = AdaController(p=0.5, ada_kimg=500.0, interval=1).half()
    assert controller.p.dtype == torch.float32
    feed(controller, [1.0], steps=1, batch=8)
    assert float(controller.p) == pytest.approx(0.5 + 8 / 500_000, abs=1e-7)  # lost in float16 (ulp 5e-4)


def test_adaptive_augment_exposes_p_for_schedules_and_in_its_state_dict():
    augment = AdaptiveAugment(p=0.1, ada_kimg=1.0, interval=1)
    augment.p = 0.4
    assert augment.p == pytest.approx(0.4) and float(augment.state_dict()["controller.p"]) == pytest.approx(0.4)
    augment.observe(torch.ones(16), batch_images=16)
    metrics = augment.metrics()
    assert float(metrics["augment/p"]) == pytest.approx(0.416) and float(metrics["augment/rt"]) == 1.0
    with pytest.raises(ValueError, match=r"augment.p must be in \[0, 1\]"):
        augment.p = -0.1


@pytest.mark.parametrize("kwargs,message", [({"interval": 0}, "interval"), ({"ada_kimg": 0}, "ada_kimg"),
                                            ({"target": 2.0}, "target"), ({"p": -1.0}, "p must be")])
def test_bad_settings_fail_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaController(**kwargs)


def test_two_ranks_update_p_from_their_scores_together():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_ranks(["tests/workers/ada_controller_ranks.py", str(port)], timeout=90)
    results = sorted((json.loads(line) for line in out.splitlines() if line.startswith("{")), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    step = 16 * 2 / 1000  # global batch 16 over an interval of 2 steps
    expected = [0.5, round(0.5 - step, 6), round(0.5 - step, 6), round(0.5 - 2 * step, 6)]  # global r_t = 0 < 0.6
    for r in results:
        assert r["p"] == expected and r["rt"] == 0.0 and r["running"] == [0.0, 0.0, 0.0, 0.0]
