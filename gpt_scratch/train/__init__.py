"""Training: settings (config), data, optimizers, the Accelerate loop, checkpoints, metrics, launch checks.

    from gpt_scratch.train import TrainConfig, train
    train(TrainConfig(data="input.txt", max_steps=100))
"""

from .config import TrainConfig, parse_config
from .loop import main, train

__all__ = ["TrainConfig", "parse_config", "train", "main"]
