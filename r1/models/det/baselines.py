"""torchvision detectors as R1 models (random init, nothing downloaded), under the R1-Det contract.

`model(images, targets)` -> torchvision's loss dict; `model(images)` -> [{"boxes", "scores", "labels"}],
labels 0-based. Images arrive already normalised and resized by R1's data pipeline, so the
internal `GeneralizedRCNNTransform` is made an identity (mean 0, std 1, size = the input's size).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import ssdlite as tv_ssdlite
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.ssd import SSD
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from r1.config import ModelConfig
from r1.errors import ConfigError
from r1.models.det.config import TVDetConfig
from r1.models.det.flops import with_gflops
from r1.registry import register_model


class TorchvisionDetector(nn.Module):
    """Adapter: R1 batch tensor + 0-based labels <-> torchvision's image lists + its label convention.

    `label_offset` is 1 for softmax detectors whose class 0 is background (SSD), else 0.
    """

    def __init__(self, net: nn.Module, label_offset: int, input_size: int):
        super().__init__()
        self.net, self.label_offset, self.input_size = net, label_offset, input_size
        t = net.transform
        t.image_mean, t.image_std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]

    def _fit_transform(self, images: torch.Tensor) -> None:
        h, w = images.shape[-2:]
        t = self.net.transform
        t.min_size, t.max_size = (min(h, w),), max(h, w)
        if t.fixed_size is not None:
            t.fixed_size = (w, h)  # torchvision reads fixed_size as (width, height)

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        self._fit_transform(images)
        was_training = self.net.training
        # torchvision chooses losses vs detections by the top module's `training` flag only;
        # flipping that flag (not the submodules') keeps BatchNorm in the caller's mode.
        self.net.training = targets is not None
        try:
            if targets is not None:
                tv_targets = [{"boxes": t["boxes"].to(images.device, torch.float32),
                               "labels": t["labels"].to(images.device) + self.label_offset} for t in targets]
                return self.net(list(images), tv_targets)
            dets = self.net(list(images))
        finally:
            self.net.training = was_training
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.label_offset}
                for d in dets]


def _check_classes(cfg: ModelConfig) -> None:
    if cfg.num_classes < 1:
        raise ConfigError("model.num_classes: 0 means 'from the data'; set it (>= 1) before building")


def _mnv3_fpn(cfg: TVDetConfig) -> BackboneWithFPN:
    """torchvision MobileNetV3-Large features at strides 8, 16, 32 -> FPN + P6/P7 (5 levels)."""
    features = mobilenet_v3_large(weights=None, width_mult=cfg.width, norm_layer=nn.BatchNorm2d).features
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    returned = [2, 3, 5]  # stage outputs at strides 8, 16, 32
    in_ch = [features[stages[i]].out_channels for i in returned]
    ch = cfg.fpn_channels
    return BackboneWithFPN(features, {str(stages[i]): str(k) for k, i in enumerate(returned)}, in_ch, ch,
                           extra_blocks=LastLevelP6P7(ch, ch))


def _post(cfg: TVDetConfig) -> dict:
    return {"min_size": cfg.input_size, "max_size": cfg.input_size, "score_thresh": cfg.score_thresh,
            "nms_thresh": cfg.nms_iou, "detections_per_img": cfg.max_det}


@with_gflops("tv_retinanet_mnv3")
@register_model("tv_retinanet_mnv3", family="det", config=TVDetConfig)
def tv_retinanet_mnv3(cfg: TVDetConfig) -> nn.Module:
    """torchvision RetinaNet on a MobileNetV3-Large FPN (P3-P7), random init."""
    _check_classes(cfg)
    return TorchvisionDetector(RetinaNet(_mnv3_fpn(cfg), cfg.num_classes, **_post(cfg)), 0, cfg.input_size)


@with_gflops("tv_fcos_mnv3")
@register_model("tv_fcos_mnv3", family="det", config=TVDetConfig)
def tv_fcos_mnv3(cfg: TVDetConfig) -> nn.Module:
    """torchvision FCOS (anchor-free, centre-ness) on a MobileNetV3-Large FPN (P3-P7), random init."""
    _check_classes(cfg)
    return TorchvisionDetector(FCOS(_mnv3_fpn(cfg), cfg.num_classes, **_post(cfg)), 0, cfg.input_size)


@with_gflops("tv_ssdlite320")
@register_model("tv_ssdlite320", family="det", config=TVDetConfig)
def tv_ssdlite320(cfg: TVDetConfig) -> nn.Module:
    """torchvision SSDlite320 with MobileNetV3-Large (reduced tail), random init; fpn_channels unused."""
    _check_classes(cfg)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = mobilenet_v3_large(weights=None, width_mult=cfg.width, norm_layer=norm, reduced_tail=True)
    tv_ssdlite._normal_init(backbone)
    backbone = tv_ssdlite._mobilenet_extractor(backbone, 6, norm)
    size = (cfg.input_size, cfg.input_size)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    out_ch = det_utils.retrieve_out_channels(backbone, size)
    head = tv_ssdlite.SSDLiteHead(out_ch, anchors.num_anchors_per_location(), cfg.num_classes + 1, norm)
    net = SSD(backbone, anchors, size, cfg.num_classes + 1, head=head, score_thresh=cfg.score_thresh,
              nms_thresh=cfg.nms_iou, detections_per_img=cfg.max_det, topk_candidates=300)
    return TorchvisionDetector(net, 1, cfg.input_size)
