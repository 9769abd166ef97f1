"""Image classification family: the R1 MobileNetV3 and the ResNet teacher."""
