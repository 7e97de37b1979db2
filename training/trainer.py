"""nnU-Net's Adam trainer with a short schedule for training on a small CPU.

Everything that shapes the model - network from the plans, Dice + CE loss with deep supervision, poly
learning-rate decay, nnU-Net's default data augmentation, foreground oversampling, checkpointing - is
nnU-Net's own. The base class is nnU-Net's `nnUNetTrainerAdam` variant (AdamW with amsgrad instead of
SGD): with only ~2,000 iterations, the default SGD (lr 1e-2, Nesterov momentum 0.99) sat on a
background-only plateau (zero Dice on every organ after 475 iterations), while AdamW at 3e-3 segmented
the liver after 60. This subclass sets that learning rate, the numbers of the schedule (nnU-Net's
default is 1000 epochs x 250 iterations on a GPU), defaults the device to the CPU and, on CPUs with
native bfloat16 (AVX512-BF16, AMX), runs the network's forward pass under bf16 autocast - the CPU
counterpart of the fp16 autocast nnU-Net uses on CUDA (which it leaves off on CPUs). That halves the
time of a training step on a 2-core AMD EPYC (0.95 s -> 0.46 s for batch 2 of 32 x 80 x 96).

nnU-Net finds trainers by name inside its own package, so this class is constructed directly (see
`training.default_model`); it can also be found by `nnUNetv2_train -tr nnUNetTrainerCPUShort` when the
`nnUNet_extTrainer` environment variable points to this folder.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam

DEFAULT_EPOCHS = 140
DEFAULT_ITERATIONS = 40
DEFAULT_VAL_ITERATIONS = 2
INITIAL_LR = 3e-3
PRECISIONS = ("auto", "bf16", "fp32")


def cpu_bf16_supported() -> bool:
    """True if oneDNN has native bfloat16 kernels on this CPU (else bf16 autocast would be slower)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class CPUAutocast:
    """Runs a module's forward pass under CPU bfloat16 autocast and hands float32 outputs back, so the
    loss (nnU-Net's Dice + CE) is computed in float32. Done with forward hooks rather than a wrapper
    module so the state dict - and therefore the checkpoint - is exactly nnU-Net's."""

    def __init__(self, module: torch.nn.Module):
        self._contexts: list = []
        self._handles = [module.register_forward_pre_hook(self._enter),
                         module.register_forward_hook(self._exit, always_call=True)]

    def _enter(self, module, args):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        ctx.__enter__()
        self._contexts.append(ctx)

    def _exit(self, module, args, output):
        self._contexts.pop().__exit__(None, None, None)
        if isinstance(output, (list, tuple)):
            return type(output)(o.float() for o in output)
        return output.float() if output is not None else output

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class nnUNetTrainerCPUShort(nnUNetTrainerAdam):
    """nnUNetTrainerAdam at lr INITIAL_LR, short schedule: DEFAULT_EPOCHS epochs of DEFAULT_ITERATIONS
    iterations. Use set_schedule() and set_precision() (before initialize(), where the poly schedule
    and the network are built) to change them."""

    def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = INITIAL_LR
        self.num_epochs = DEFAULT_EPOCHS
        self.num_iterations_per_epoch = DEFAULT_ITERATIONS
        self.num_val_iterations_per_epoch = DEFAULT_VAL_ITERATIONS
        # checkpoint_latest.pth every few epochs, so an interrupted run can continue (load_checkpoint)
        self.save_every = 5
        self.precision = "auto"
        self.cpu_autocast: CPUAutocast | None = None

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

    def set_precision(self, precision: str) -> None:
        """"auto" (bf16 on a CPU with native bf16, else nnU-Net's default), "bf16" (CPU only; an error
        if the CPU lacks it) or "fp32"."""
        if self.was_initialized:
            raise RuntimeError("set_precision must be called before initialize()")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "bf16" and (self.device.type != "cpu" or not cpu_bf16_supported()):
            raise ValueError("bf16 training needs a CPU device with native bfloat16 (AVX512-BF16 or AMX)")
        self.precision = precision

    @property
    def uses_cpu_bf16(self) -> bool:
        return self.device.type == "cpu" and (
            self.precision == "bf16" or (self.precision == "auto" and cpu_bf16_supported()))

    def initialize(self):
        was = self.was_initialized
        super().initialize()
        if not was and self.uses_cpu_bf16:
            self.cpu_autocast = CPUAutocast(self.network)
            self.print_to_log_file("network forward pass under CPU bfloat16 autocast")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_cpu_trainer(args, dataset_name: str, plans_name: str, configuration: str, epochs: int,
                      iterations: int, val_iterations: int, continue_training: bool = False):
    """The recipes' nnUNetTrainerCPUShort on a preprocessed dataset (fold 'all'): data-augmentation
    processes, torch threads, seed, schedule and precision from `args`. Shared by the default model's
    recipe (training/default_model.py) and the localiser's (training/localizer.py)."""
    os.environ["nnUNet_n_proc_DA"] = str(args.da_processes)
    os.environ["nnUNet_compile"] = "false"
    from batchgenerators.utilities.file_and_folder_operations import load_json

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    pre = Path(os.environ["nnUNet_preprocessed"]) / dataset_name
    plans = load_json(str(pre / f"{plans_name}.json"))
    plans["continue_training"] = continue_training  # nnUNetTrainer pops this key
    trainer = nnUNetTrainerCPUShort(plans, configuration, "all", load_json(str(pre / "dataset.json")),
                                    torch.device("cpu"))
    trainer.set_schedule(epochs, iterations, val_iterations)
    trainer.set_precision(args.precision)
    return trainer
