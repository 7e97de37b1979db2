"""nnU-Net's Adam trainer with a short schedule for training on a small CPU.

Everything that shapes the model - network from the plans, Dice + CE loss with deep supervision, poly
learning-rate decay, nnU-Net's default data augmentation, foreground oversampling, checkpointing - is
nnU-Net's own. The base class is nnU-Net's `nnUNetTrainerAdam` variant (AdamW with amsgrad instead of
SGD): with only ~2,000 iterations, the default SGD (lr 1e-2, Nesterov momentum 0.99) sat on a
background-only plateau (zero Dice on every organ after 475 iterations), while AdamW at 3e-3 segmented
the liver after 60. This subclass sets that learning rate, the numbers of the schedule (nnU-Net's
default is 1000 epochs x 250 iterations on a GPU) and defaults the device to the CPU.

nnU-Net finds trainers by name inside its own package, so this class is constructed directly (see
`training.default_model`); it can also be found by `nnUNetv2_train -tr nnUNetTrainerCPUShort` when the
`nnUNet_extTrainer` environment variable points to this folder.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam

DEFAULT_EPOCHS = 70
DEFAULT_ITERATIONS = 25
DEFAULT_VAL_ITERATIONS = 2
INITIAL_LR = 3e-3


class nnUNetTrainerCPUShort(nnUNetTrainerAdam):
    """nnUNetTrainerAdam at lr INITIAL_LR, short schedule: DEFAULT_EPOCHS epochs of DEFAULT_ITERATIONS
    iterations. Use set_schedule() (before initialize(), where the poly schedule is built) to change
    the numbers."""

    def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = INITIAL_LR
        self.num_epochs = DEFAULT_EPOCHS
        self.num_iterations_per_epoch = DEFAULT_ITERATIONS
        self.num_val_iterations_per_epoch = DEFAULT_VAL_ITERATIONS
        # checkpoint_latest.pth every few epochs, so an interrupted run can continue (load_checkpoint)
        self.save_every = 5

    def set_schedule(self, epochs: int, iterations: int, val_iterations: int) -> None:
        """Change the schedule; only allowed before initialize() (the LR scheduler is built there)."""
        if self.was_initialized:
            raise RuntimeError("set_schedule must be called before initialize()")
        if min(epochs, iterations) < 1 or val_iterations < 0:
            raise ValueError(f"need epochs >= 1, iterations >= 1, val_iterations >= 0; got {epochs}, "
                             f"{iterations}, {val_iterations}")
        self.num_epochs = int(epochs)
        self.num_iterations_per_epoch = int(iterations)
        self.num_val_iterations_per_epoch = int(val_iterations)
