"""Encoders: a backbone, a linear head to the embedding dimension, then L2 normalisation.

There is no projection head: the unit vector is both the training feature and the served
embedding (AND_SPEC §1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torchvision is imported where a ResNet is built, not here: importing it costs about 2 s
# (it loads torch._dynamo), which every process that only builds or loads a small CNN (a
# job, the API, the command line) would pay at start.


def resnet18_cifar(dim: int) -> nn.Module:
    """CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool; 11.2 M parameters at dim 128."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=dim)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def resnet18_imagenet(dim: int) -> nn.Module:
    """ImageNet-style ResNet-18 (7x7 stride-2 stem and max-pool) for 224x224 inputs."""
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=dim)


def small_cnn(dim: int) -> nn.Module:
    """Six conv-BN-ReLU layers (32 | 64 64 | 128 128 | 256, pooling between groups), 0.6 M
    parameters: minutes per CIFAR-sized epoch on 2 CPU cores."""

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    return nn.Sequential(
        *conv(3, 32), nn.MaxPool2d(2),
        *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),
        *conv(64, 128), *conv(128, 128), nn.MaxPool2d(2),
        *conv(128, 256),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(256, dim),
    )


BUILDERS = {"resnet18_cifar": resnet18_cifar, "small_cnn": small_cnn, "resnet18": resnet18_imagenet}


class Encoder(nn.Module):
    """Image batch -> L2-normalised embeddings (B x dim)."""

    def __init__(self, backbone: str, dim: int) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.dim = dim
        self.net = BUILDERS[backbone](dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: under bf16 autocast the norm of a 128-d vector loses digits.
        return F.normalize(self.net(x).float(), dim=1)
