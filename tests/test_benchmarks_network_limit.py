"""benchmarks.studies.network_limit's FLOP count against closed-form values."""
from __future__ import annotations

import torch

from benchmarks.studies.network_limit import conv_flops


def test_conv3d_flops_closed_form():
    conv = torch.nn.Conv3d(3, 5, kernel_size=(1, 3, 3), padding=(0, 1, 1), stride=(1, 2, 2))
    x = torch.zeros(2, 3, 4, 8, 10)           # output 4 x 4 x 5 voxels, batch 2
    assert conv_flops(conv, x) == 2 * (4 * 4 * 5) * 5 * 3 * 9 * 2


def test_transposed_conv_and_nesting():
    up = torch.nn.ConvTranspose3d(6, 4, kernel_size=2, stride=2)   # each of 6x(2x3x4) inputs scatters 4x8
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.LeakyReLU(), up)
    x = torch.zeros(1, 1, 2, 3, 4)
    assert conv_flops(net, x) == 2 * (2 * 3 * 4) * 6 * 1 * 27 + 2 * (2 * 3 * 4) * 6 * 4 * 8
    assert not net[0]._forward_hooks and not up._forward_hooks     # hooks removed afterwards
