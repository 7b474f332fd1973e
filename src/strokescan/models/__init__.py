"""Networks and their files: the slice classifier (EfficientNet-Lite0) and, later, the U-Net."""
