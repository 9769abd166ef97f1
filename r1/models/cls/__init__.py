"""Image classification family: the R1 MobileNetV3 and the ResNet teacher."""
from r1.models.cls import family, mlp, mobilenetv3, resnet, slimmable  # noqa: F401
