"""Anchor assignment on hand-made cases where the answer is computed by hand."""
import torch

from r1.models.det.assign import BACKGROUND, IGNORE, atss_assign, max_iou_assign


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_atss_picks_the_close_high_iou_anchor():
    anchors = t([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [40, 40, 50, 50]])
    # candidates (top-3 by centre distance): IoU 0.694, 0.089, 0.089 -> threshold mean+std = 0.64
    matched = atss_assign(anchors, [4], t([[0, 0, 12, 12]]), topk=3)
    assert matched.tolist() == [0, BACKGROUND, BACKGROUND, BACKGROUND]


def test_atss_requires_anchor_centre_inside_box():
    # both candidates have IoU 0.25 exactly (std 0, threshold 0.25); only the second's centre is inside
    anchors = t([[6, 0, 16, 10], [-5, -5, 15, 15]])
    assert atss_assign(anchors, [2], t([[0, 0, 10, 10]]), topk=2).tolist() == [BACKGROUND, 0]


def test_atss_anchor_shared_by_two_boxes_goes_to_higher_iou():
    anchors = t([[0, 0, 10, 10]])
    gt = t([[0, 0, 12, 12], [0, 0, 10, 10]])  # IoU 0.694 and 1.0
    assert atss_assign(anchors, [1], gt, topk=1).tolist() == [1]


def test_atss_takes_topk_per_level():
    # three levels of one anchor pair / single anchor; topk=1 keeps the nearest anchor of each level:
    # anchor 0 (IoU 64/196 = 0.327), anchor 2 (196/256 = 0.766), anchor 4 (196/1024 = 0.191)
    # -> threshold mean + std = 0.428 + 0.300 = 0.728: only anchor 2 is positive
    anchors = t([[0, 0, 8, 8], [8, 0, 16, 8], [0, 0, 16, 16], [16, 0, 32, 16], [0, 0, 32, 32]])
    matched = atss_assign(anchors, [2, 2, 1], t([[0, 0, 14, 14]]), topk=1)
    assert matched.tolist() == [BACKGROUND, BACKGROUND, 0, BACKGROUND, BACKGROUND]


def test_atss_without_boxes_is_all_background():
    anchors = t([[0, 0, 10, 10], [5, 5, 15, 15]])
    assert atss_assign(anchors, [2], torch.zeros(0, 4)).tolist() == [BACKGROUND, BACKGROUND]


def test_max_iou_positive_ignore_negative_and_low_quality():
    anchors = t([[0, 0, 10, 10], [0, 0, 10, 26], [50, 50, 60, 60], [100, 100, 110, 110]])
    gt = t([[0, 0, 10, 12], [100, 100, 130, 130]])
    # IoUs with gt0: 0.833 (pos), 120/260 = 0.46 (ignore), 0 (neg); gt1 best anchor IoU 0.11 (low quality)
    assert max_iou_assign(anchors, gt).tolist() == [0, IGNORE, BACKGROUND, 1]
    assert max_iou_assign(anchors, gt, allow_low_quality=False).tolist() == [0, IGNORE, BACKGROUND, BACKGROUND]
