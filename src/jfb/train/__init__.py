"""Training: configuration-driven loop, safe checkpoints, metric logs and DDP helpers."""

from jfb.train.checkpoint import load_checkpoint, load_weights, save_checkpoint, unwrap_model
from jfb.train.distributed import DistInfo, cleanup_distributed, get_dist_info, init_distributed
from jfb.train.log import MetricLogger, Progress
from jfb.train.trainer import Trainer, TrainingDivergedError, epoch_permutation, lr_factor

__all__ = [
    "DistInfo",
    "MetricLogger",
    "Progress",
    "Trainer",
    "TrainingDivergedError",
    "cleanup_distributed",
    "epoch_permutation",
    "get_dist_info",
    "init_distributed",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
    "save_checkpoint",
    "unwrap_model",
]
