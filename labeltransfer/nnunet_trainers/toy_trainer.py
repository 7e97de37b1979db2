"""nnU-Net's own trainer with a toy-sized schedule, for labeltransfer/toy_reproduction.py.

Derived from the default model's trainer (training/trainer.py: nnU-Net's nnUNetTrainerAdam at lr 3e-3,
bf16 autocast on CPUs with native bf16): with a few hundred to a few thousand iterations nnU-Net's
default SGD stays on a background-only plateau. Architecture, loss, augmentation and the poly learning
rate are nnU-Net's; only the schedule comes from here. nnU-Net finds this class through the environment
variable nnUNet_extTrainer=<this folder> (nnunetv2 >= 2.6), so nothing is installed into nnunetv2:

    nnUNet_extTrainer=$PWD/labeltransfer/nnunet_trainers nnUNetv2_train 901 3d_fullres all -tr nnUNetTrainerToy -device cpu

The schedule comes from environment variables (defaults in brackets): LT_TOY_EPOCHS [50],
LT_TOY_ITERS [40] iterations per epoch, LT_TOY_VAL_ITERS [3]. LT_TOY_SKIP_FINAL_VAL=1 [1] skips
nnU-Net's final sliding-window validation; the toy script scores its own held-out cases instead.
nnU-Net imports this file by its name from that folder (the class name is what it looks for), so
it imports torch and the project's training.trainer only (installed with the project).
"""
import os

import torch

from training.trainer import nnUNetTrainerCPUShort

_CUDA = torch.device("cuda")  # nnU-Net's default device argument


class nnUNetTrainerToy(nnUNetTrainerCPUShort):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("LT_TOY_EPOCHS", "50"))
        self.num_iterations_per_epoch = int(os.environ.get("LT_TOY_ITERS", "40"))
        self.num_val_iterations_per_epoch = int(os.environ.get("LT_TOY_VAL_ITERS", "3"))
        self.save_every = max(1, self.num_epochs // 2)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("LT_TOY_SKIP_FINAL_VAL", "1") == "1":
            self.print_to_log_file("nnUNetTrainerToy: final validation skipped (LT_TOY_SKIP_FINAL_VAL=1)")
            return
        super().perform_actual_validation(save_probabilities)
