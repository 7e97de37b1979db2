"""A fold's network as a torch module: built from the plans by nnunetv2's own `get_network_from_plans`
(never re-implemented), its checkpoint weights loaded. Only that small nnunetv2 module is imported: its
PlansManager and predictor pull in the training stack, which would cost seconds of FLARE running time."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from inference import InferenceError
from inference.model.checkpoint import strip_wrapper_prefixes

if TYPE_CHECKING:
    from inference.model.folder import Configuration
    from inference.model.loaded import LoadedModel


def build_network(architecture: dict, num_channels: int, num_classes: int) -> torch.nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture.get("_kw_requires_import", ()), num_channels, num_classes,
                                  allow_init=False, deep_supervision=False)


def load_networks(checkpoint_files: list[Path], checkpoints: list[dict], config: Configuration,
                  num_channels: int, num_classes: int, device: torch.device) -> list[torch.nn.Module]:
    """One network per fold with its checkpoint's weights, in eval mode on `device`."""
    networks = []
    for path, checkpoint in zip(checkpoint_files, checkpoints):
        network = build_network(config.architecture, num_channels, num_classes)
        try:
            network.load_state_dict(strip_wrapper_prefixes(checkpoint["network_weights"]))
        except RuntimeError as e:
            raise InferenceError(f"{path}: weights do not fit the network built from plans.json and dataset.json "
                                 f"({num_classes} labels, {num_channels} channels): "
                                 f"{str(e).splitlines()[0]}") from None
        networks.append(network.to(device).eval())
    return networks


def cpu_copies(model: LoadedModel) -> list[torch.nn.Module]:
    """The model's networks on the CPU, built from the plans and a host copy of the weights (never a
    device-side copy: the device has just run out of memory). Built once, kept with the model."""
    if model.device.type == "cpu":
        return model.networks
    cached = vars(model).get("_cpu_networks")
    if cached is None:
        cached = []
        for network in model.networks:
            cpu_net = build_network(model.config.architecture, model.num_channels, model.num_classes)
            cpu_net.load_state_dict({k: v.cpu() for k, v in network.state_dict().items()})
            cached.append(cpu_net.eval())
        vars(model)["_cpu_networks"] = cached
    return cached
