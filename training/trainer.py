"""nnUNetTrainer with a short schedule for training on a small CPU.

Everything that shapes the model - network from the plans, Dice + CE loss with deep supervision, SGD
with Nesterov momentum and poly learning-rate decay, nnU-Net's default data augmentation, foreground
oversampling, checkpointing - is nnUNetTrainer's own. This subclass only changes the numbers of the
schedule (nnU-Net's default is 1000 epochs x 250 iterations on a GPU) and defaults the device to the CPU.

nnU-Net finds trainers by name inside its own package, so this class is constructed directly (see
`training.default_model`); it can also be found by `nnUNetv2_train -tr nnUNetTrainerCPUShort` when the
`nnUNet_extTrainer` environment variable points to this folder.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

DEFAULT_EPOCHS = 40
DEFAULT_ITERATIONS = 50
DEFAULT_VAL_ITERATIONS = 3


class nnUNetTrainerCPUShort(nnUNetTrainer):
    """nnUNetTrainer, short schedule: DEFAULT_EPOCHS epochs of DEFAULT_ITERATIONS iterations (set
    `num_epochs` / `num_iterations_per_epoch` / `num_val_iterations_per_epoch` after construction and
    before `initialize()` to change them; the poly schedule is built from `num_epochs` in initialize)."""

    def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
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
