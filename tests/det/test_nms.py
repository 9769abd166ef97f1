"""batched_nms and the post-processing against brute-force references."""
import torch
from torchvision.ops import batched_nms, box_iou

from r1.models.det.postprocess import postprocess


def random_boxes(n, size=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g)


def brute_force_nms(boxes, scores, labels, iou):
    """Greedy NMS: visit by descending score, keep a box unless a kept same-class box overlaps > iou."""
    ious, same = box_iou(boxes, boxes).tolist(), (labels[:, None] == labels[None, :]).tolist()
    kept = []
    for i in scores.argsort(descending=True).tolist():
        if all(not same[i][j] or ious[i][j] <= iou for j in kept):
            kept.append(i)
    return kept


def test_batched_nms_matches_brute_force():
    for seed in range(5):
        boxes, scores, labels = random_boxes(200, seed=seed)
        for iou in (0.3, 0.5, 0.7):
            assert batched_nms(boxes, scores, labels, iou).tolist() == brute_force_nms(boxes, scores, labels, iou)


def test_postprocess_matches_reference_pipeline():
    k, per_level = 3, [60, 30, 10]
    boxes, _, _ = random_boxes(sum(per_level), seed=1)
    logits = torch.randn(1, sum(per_level), k, generator=torch.Generator().manual_seed(2)) * 3
    out = postprocess(logits, boxes[None], per_level, (100, 100), score_thresh=0.3, topk=20, nms_iou=0.5,
                      max_det=25)[0]
    # reference: per level, all (anchor, class) pairs above threshold, best 20, then greedy NMS, first 25
    cand_b, cand_s, cand_l, start = [], [], [], 0
    for n in per_level:
        s = torch.sigmoid(logits[0, start:start + n])  # (n, k)
        pairs = [(s[a, c].item(), a + start, c) for a in range(n) for c in range(k) if s[a, c] > 0.3]
        for score, a, c in sorted(pairs, reverse=True)[:20]:
            cand_b.append(boxes[a].clamp(0, 100)), cand_s.append(score), cand_l.append(c)
        start += n
    b, s, lab = torch.stack(cand_b), torch.tensor(cand_s), torch.tensor(cand_l)
    keep = brute_force_nms(b, s, lab, 0.5)[:25]
    assert torch.allclose(out["scores"], s[keep])
    assert torch.allclose(out["boxes"], b[keep])
    assert out["labels"].tolist() == lab[keep].tolist()


def test_postprocess_empty():
    out = postprocess(torch.full((2, 10, 4), -20.0), torch.zeros(2, 10, 4), [10], (32, 32))
    assert [len(o["boxes"]) for o in out] == [0, 0]
    assert out[0]["boxes"].shape == (0, 4)
