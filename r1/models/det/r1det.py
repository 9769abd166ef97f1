"""R1-Det: R1 MobileNetV3 backbone -> FPN -> one head shared across levels, focal + box loss, ATSS.

    images (B, 3, H, W) -> backbone C2..C5 (strides 4..32) -> FPN P<levels> (fpn_channels each)
      -> shared head: cls (B, A, K) logits, box (B, A, 4) deltas, A = sum over levels H_l*W_l*anchors
      -> train: {"cls": focal loss, "box": GIoU or smooth-L1}, both divided by the number of positives
      -> eval: score threshold, top-k per level, batched NMS, max detections.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import FeaturePyramidNetwork, generalized_box_iou_loss, sigmoid_focal_loss

from r1.errors import ConfigError
from r1.models.cls.mobilenetv3 import MobileNetV3Backbone
from r1.models.det.anchors import BoxCoder, cell_anchors, grid_anchors
from r1.models.det.assign import IGNORE, atss_assign, max_iou_assign
from r1.models.det.config import R1DetConfig
from r1.models.det.flops import with_gflops
from r1.models.det.postprocess import postprocess
from r1.registry import register_model


def _head_conv(ch: int, depthwise: bool) -> nn.Sequential:
    conv = ([nn.Conv2d(ch, ch, 3, 1, 1, groups=ch, bias=False), nn.Conv2d(ch, ch, 1, bias=False)]
            if depthwise else [nn.Conv2d(ch, ch, 3, 1, 1, bias=False)])
    # GroupNorm, not BatchNorm: the head is shared by levels with different statistics.
    return nn.Sequential(*conv, nn.GroupNorm(min(32, ch // 4) or 1, ch), nn.ReLU(inplace=True))


class SharedHead(nn.Module):
    """Applied to every level: (B, C, H, W) -> cls (B, H*W*A, K), box deltas (B, H*W*A, 4)."""

    def __init__(self, ch: int, num_anchors: int, num_classes: int, convs: int, depthwise: bool):
        super().__init__()
        self.cls_tower = nn.Sequential(*[_head_conv(ch, depthwise) for _ in range(convs)])
        self.box_tower = nn.Sequential(*[_head_conv(ch, depthwise) for _ in range(convs)])
        self.cls_out = nn.Conv2d(ch, num_anchors * num_classes, 3, 1, 1)
        self.box_out = nn.Conv2d(ch, num_anchors * 4, 3, 1, 1)
        self.num_anchors, self.num_classes = num_anchors, num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_out.bias, -4.595)  # prior p = 0.01: -log((1 - p) / p)

    def _flat(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        b, _, h, w = x.shape
        # (B, A*D, H, W) -> (B, A, D, H, W) -> (B, H, W, A, D) -> (B, H*W*A, D)
        return x.view(b, self.num_anchors, depth, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, depth)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls = self._flat(self.cls_out(self.cls_tower(x)), self.num_classes)
        box = self._flat(self.box_out(self.box_tower(x)), 4)
        return cls, box


class R1Det(nn.Module):
    """`model(images, targets)` -> {"cls", "box"} losses; `model(images)` -> list of detections.

    images (B, 3, H, W) normalised; targets: list of {"boxes": (N, 4) x1y1x2y2 input pixels,
    "labels": (N,) int64 0-based}. Detections: {"boxes" (M, 4), "scores" (M,), "labels" (M,)}.
    """

    def __init__(self, cfg: R1DetConfig):
        super().__init__()
        if cfg.num_classes < 1:
            raise ConfigError("model.num_classes: 0 means 'from the data'; set it (>= 1) before building")
        self.cfg = cfg
        self.input_size = cfg.input_size
        self.backbone = MobileNetV3Backbone(cfg.arch, cfg.width, 2, 3, cfg.exp_channels)
        # feature_info: (channels, stride) per stage end; the arch decides which strides exist.
        by_stride = {s: (i, ch) for i, (ch, s) in enumerate(self.backbone.feature_info)}
        self.in_levels = [lv for lv in cfg.levels if lv <= 5]
        self.feat_index = [by_stride[2 ** lv][0] for lv in self.in_levels]
        self.fpn = FeaturePyramidNetwork([by_stride[2 ** lv][1] for lv in self.in_levels], cfg.fpn_channels)
        n_extra = len(cfg.levels) - len(self.in_levels)
        self.extra = nn.ModuleList(nn.Conv2d(cfg.fpn_channels, cfg.fpn_channels, 3, 2, 1) for _ in range(n_extra))
        self.strides = [2 ** lv for lv in cfg.levels]
        cells = [cell_anchors(cfg.anchor_size * s, cfg.anchor_scales, cfg.anchor_ratios) for s in self.strides]
        self.register_buffer("cells", torch.stack(cells), persistent=False)  # (L, A, 4)
        self.head = SharedHead(cfg.fpn_channels, self.cells.shape[1], cfg.num_classes, cfg.head_convs,
                               cfg.depthwise)
        self.coder = BoxCoder()
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.grad_ckpt = enable

    # ------------------------------------------------------------------ raw path (exportable)
    def pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone.forward_features(images)
        p = list(self.fpn(OrderedDict((str(i), feats[i]) for i in self.feat_index)).values())
        for conv in self.extra:
            p.append(conv(F.relu(p[-1]) if len(p) > len(self.in_levels) else p[-1]))
        return p

    def forward_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> cls logits (B, A, K), box deltas (B, A, 4), levels concatenated."""
        outs = [self.head(p) for p in self.pyramid(images)]
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)

    def anchors(self, image_size: tuple[int, int], device=None) -> tuple[torch.Tensor, list[int]]:
        """All anchors (A, 4) for an (H, W) input, and the count per level."""
        h, w = image_size
        grids = [grid_anchors(self.cells[i].to(device or self.cells.device), s, -(-h // s), -(-w // s))
                 for i, s in enumerate(self.strides)]
        return torch.cat(grids), [g.shape[0] for g in grids]

    def forward_decoded(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For export with NMS outside the graph: boxes (B, A, 4) x1y1x2y2, scores (B, A, K) in [0, 1]."""
        cls, deltas = self.forward_raw(images)
        anchors, _ = self.anchors(images.shape[-2:], images.device)
        return self.coder.decode(deltas, anchors[None]), torch.sigmoid(cls)

    # ------------------------------------------------------------------ training
    def assign(self, anchors: torch.Tensor, per_level: list[int], targets: list[dict]) -> torch.Tensor:
        """Matched gt index per anchor, (B, A): >= 0 positive, -1 background, -2 ignored."""
        out = []
        for t in targets:
            gt = t["boxes"].to(anchors)
            if self.cfg.assigner == "atss":
                out.append(atss_assign(anchors, per_level, gt, self.cfg.atss_topk))
            else:
                out.append(max_iou_assign(anchors, gt, self.cfg.pos_iou, self.cfg.neg_iou))
        return torch.stack(out)

    def loss(self, cls: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, matched: torch.Tensor,
             targets: list[dict]) -> dict[str, torch.Tensor]:
        pos, valid = matched >= 0, matched != IGNORE  # (B, A)
        num_pos = pos.sum().clamp(min=1).to(cls.dtype)
        cls_target = torch.zeros_like(cls)
        gt_boxes = []
        for b, t in enumerate(targets):
            idx = matched[b][pos[b]]
            cls_target[b, pos[b].nonzero().squeeze(1), t["labels"].to(cls.device)[idx]] = 1.0
            gt_boxes.append(t["boxes"].to(anchors)[idx])
        if not bool(valid.all()):  # max-IoU's grey zone: drop ignored anchors
            cls, cls_target = cls[valid], cls_target[valid]
        cls_loss = sigmoid_focal_loss(cls, cls_target, self.cfg.focal_alpha, self.cfg.focal_gamma,
                                      reduction="sum") / num_pos
        gt = torch.cat(gt_boxes)
        pos_anchors = anchors[None].expand_as(deltas)[pos]
        if gt.numel() == 0:  # keep the box branch in the graph (DDP needs every parameter used)
            box_loss = deltas.sum() * 0.0
        elif self.cfg.box_loss == "giou":
            pred = self.coder.decode(deltas[pos], pos_anchors)
            box_loss = generalized_box_iou_loss(pred, gt, reduction="sum") / num_pos
        else:
            target = self.coder.encode(gt, pos_anchors)
            box_loss = F.smooth_l1_loss(deltas[pos], target, beta=1 / 9, reduction="sum") / num_pos
        return {"cls": cls_loss, "box": box_loss * self.cfg.box_weight}

    def distill_outputs(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Raw outputs plus the assignment, for distillation: cls (B, A, K), box (B, A, 4) deltas,
        anchors (A, 4), matched (B, A) (>= 0 on positives: `cls[matched >= 0]` are their logits)."""
        cls, deltas = self.forward_raw(images)
        anchors, per_level = self.anchors(images.shape[-2:], images.device)
        return {"cls": cls, "box": deltas, "anchors": anchors,
                "matched": self.assign(anchors, per_level, targets)}

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        cls, deltas = self.forward_raw(images)
        anchors, per_level = self.anchors(images.shape[-2:], images.device)
        if targets is not None:
            return self.loss(cls, deltas, anchors, self.assign(anchors, per_level, targets), targets)
        boxes = self.coder.decode(deltas, anchors[None])
        c = self.cfg
        return postprocess(cls, boxes, per_level, tuple(images.shape[-2:]), c.score_thresh, c.topk,
                           c.nms_iou, c.max_det)


@with_gflops("r1_det")
@register_model("r1_det", family="det", config=R1DetConfig)
def r1_det(cfg: R1DetConfig) -> nn.Module:
    """R1-Det: MobileNetV3 + FPN + shared head, focal loss, ATSS assignment, batched NMS."""
    return R1Det(cfg)
