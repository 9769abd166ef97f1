"""Detection family: R1-Det (MobileNetV3 + FPN + shared head, ATSS, focal loss) and torchvision baselines."""
