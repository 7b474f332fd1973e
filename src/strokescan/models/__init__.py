"""Networks beside their plans: the slice classifier, the lesion U-Net, the orientation network and the rotation
estimator built on it; how every model is stored."""
