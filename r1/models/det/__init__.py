"""Detection family: R1-Det (MobileNetV3 + FPN + shared head, ATSS, focal loss) and torchvision baselines."""
from r1.models.det import anchors, assign, baselines, family, flops, predict_io, r1det  # noqa: F401
from r1.models.det.flops import count_gflops, count_params  # noqa: F401
