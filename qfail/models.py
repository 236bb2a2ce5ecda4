"""Model families: an MLP, a small CNN and CIFAR-style ResNets (He et al., 2016, sec. 4.2).

All are plain ``nn.Module`` s made of Conv2d/Linear/BatchNorm2d/ReLU modules (ReLU as modules,
not functions, so quantization wrappers, hooks and verifiers can see every layer) and all
trace with ``torch.fx``. Each takes ``input_shape = (C, H, W)`` and works from 8x8 digits to
32x32 CIFAR images.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from qfail.checks import check_choice, check_range

__all__ = ["MODELS", "channels_last", "MaxPool2d", "MLP", "SmallCNN", "LeNet", "CifarResNet", "BasicBlock", "resnet18", "build_model",
           "split_before_dropout"]

MODELS = ("mlp", "cnn", "lenet1", "lenet5", "resnet", "resnet18")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The batch in channels-last (NHWC) memory order: the values and the logical shape are
    unchanged. On the CPU, torch's max-pooling runs about 8x faster on it and oneDNN's
    convolutions somewhat faster (measured on this project's AVX2 machine). A one-channel image
    is both layouts at once, so for grayscale inputs the weights decide (:func:`build_model`)."""
    return x.contiguous(memory_format=torch.channels_last)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed on channels-last memory (see :func:`channels_last`); what follows
    stays channels-last. Same values, same (empty) state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(channels_last(x))


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU (-> Dropout)] * len(hidden) -> Linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10,
                 hidden: tuple[int, ...] = (128, 64), dropout: float = 0.0) -> None:
        super().__init__()
        check_range("dropout", dropout, 0.0, 0.9)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks (conv3x3 -> BN -> ReLU -> maxpool 2) and a linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10,
                 channels: tuple[int, int] = (16, 32), batchnorm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        check_range("dropout", dropout, 0.0, 0.9)
        c_in, h, w = input_shape
        blocks: list[nn.Module] = []
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)]
            if batchnorm:
                blocks.append(nn.BatchNorm2d(c_out))
            blocks += [nn.ReLU(), MaxPool2d(2)]
            c_in, h, w = c_out, h // 2, w // 2
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten()]
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(c_in * h * w, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(channels_last(x)))


class LeNet(nn.Module):
    """LeNet-1 and LeNet-5 (LeCun et al., 1998), the MNIST models of Hu et al.: two 5x5 conv +
    ReLU + max-pool blocks and a dense head. Both convolutions pad by 2 so that any side from 8
    up works (28 gives the classic shapes)."""

    VARIANTS: ClassVar[dict[str, tuple[tuple[int, int], tuple[int, ...]]]] = {"lenet1": ((4, 12), ()), "lenet5": ((6, 16), (120, 84))}

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10, variant: str = "lenet5",
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_choice("variant", variant, tuple(self.VARIANTS))
        check_range("dropout", dropout, 0.0, 0.9)
        (c1, c2), hidden = self.VARIANTS[variant]
        c_in, h, w = input_shape
        self.features = nn.Sequential(nn.Conv2d(c_in, c1, 5, padding=2), nn.ReLU(), MaxPool2d(2),
                                      nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), MaxPool2d(2))
        head: list[nn.Module] = [nn.Flatten()]
        width = c2 * (h // 4) * (w // 4)
        for units in hidden:
            head += [nn.Linear(width, units), nn.ReLU()]
            width = units
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(channels_last(x)))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: three stages of n blocks, widths 16/32/64 x ``width``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int = 10, depth: int = 20,
                 width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth={depth} is not allowed; choose 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56)")
        check_range("width", width, 0.125, 8.0)
        n = (depth - 2) // 6
        # channels rounded up to a multiple of 8 (MobileNet's make_divisible): torch 2.15's oneDNN
        # convolution backward corrupted the heap on AVX2 CPUs for stages of 4 or 6 channels
        widths = [8 * max(1, -(-round(c * width) // 8)) for c in (16, 32, 64)]
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, c_in = [], widths[0]
        for stage, c_out in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if (stage > 0 and i == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(channels_last(x)))))


def split_before_dropout(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
    """``model`` as a deterministic prefix and the rest, cut before its first dropout, so that
    MC-dropout can run the prefix once per batch: for SmallCNN and LeNet (``classifier(features(x))``
    with the dropout in the classifier); otherwise the identity and the whole model. The
    dropout masks are drawn in the same order either way."""
    if type(model) in (SmallCNN, LeNet) and any(isinstance(m, nn.Dropout) for m in model.classifier):
        features, classifier = model.features, model.classifier
        cut = next(i for i, m in enumerate(classifier) if isinstance(m, nn.Dropout))
        return (lambda x: classifier[:cut](features(x))), classifier[cut:]
    return (lambda x: x), model


def resnet18(input_shape: tuple[int, ...], num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, for small images."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(input_shape[0], 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int = 10, seed: int | None = None,
                **kwargs) -> nn.Module:
    """A model by name (one of ``MODELS``), initialised from ``seed`` when one is given."""
    check_choice("model", name, MODELS)
    if seed is not None:
        torch.manual_seed(seed)
    if name in LeNet.VARIANTS:
        model = LeNet(tuple(input_shape), num_classes, variant=name, **kwargs)
    else:
        cls = {"mlp": MLP, "cnn": SmallCNN, "resnet": CifarResNet, "resnet18": resnet18}[name]
        model = cls(tuple(input_shape), num_classes, **kwargs)
    # convolution weights in channels-last memory (same values): a one-channel image is both
    # layouts, so only the weights make oneDNN run channels-last from the first convolution on.
    # Measured on these cores: LeNet-5 and the small CNN train 1.4-1.6x faster, and an attack
    # step on a 4-bit ResNet-8 runs 1.1x faster.
    return model.to(memory_format=torch.channels_last)
