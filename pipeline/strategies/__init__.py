"""Distribution strategies for two-player training; importing this package registers their names with
Lightning (``ddp_gan``, ``deepspeed_gan``), so configs and ``--trainer.strategy`` can name them."""

from pipeline.strategies import deepspeed_gan, two_player_ddp
from pipeline.strategies.two_player_ddp import TwoPlayerDDPStrategy

for _module in (two_player_ddp, deepspeed_gan):
    _module.register()

__all__ = ["TwoPlayerDDPStrategy"]
