"""R1-LM forward/backward on CUDA vs CPU fp32, per SDPA backend and autocast dtype (needs a GPU).

    python benchmarks/gpu_attention_parity.py     # one line per (dtype, backend): loss, gradient rel. error
"""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from r1.registry import build_model

torch.manual_seed(0)
m = build_model("r1_lm", flavor="small", num_classes=65, block_size=64, n_kv_head=1, window=16, pos="rope",
                exit_weight=2.0)
idx = torch.randint(0, 65, (12, 64))
tgt = torch.randint(0, 65, (12, 64))


def run(dev, dtype=None, backend=None):
    mm = m.to(dev)
    mm.zero_grad()
    ctx = sdpa_kernel([backend]) if backend is not None else torch.enable_grad()
    ac = torch.autocast(dev, dtype=dtype) if dtype else torch.enable_grad()
    with ctx, ac:
        out = mm(idx.to(dev), tgt.to(dev))
    loss = sum(out.values())
    loss.float().backward()
    loss = loss.detach()
    g = torch.cat([p.grad.flatten().float().cpu() for p in mm.parameters() if p.grad is not None])
    return float(loss), g


ref_loss, ref_g = run("cpu")
print(f"cpu fp32 loss {ref_loss:.5f}")
# cuDNN last: its failures (misaligned address) poison the CUDA context for every later call
cases = [(d, b) for b in (None, SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION)
         for d in (None, torch.bfloat16, torch.float16)] + [(torch.bfloat16, SDPBackend.CUDNN_ATTENTION)]
for dtype, b in cases:
    try:
        loss, g = run("cuda", dtype, b)
        rel = float((g - ref_g).norm() / ref_g.norm())
        print(f"cuda {str(dtype):15s} {str(b):35s} loss {loss:.5f} grad rel.err {rel:.4f}")
    except Exception as e:
        print(f"cuda {str(dtype):15s} {str(b):35s} unavailable: {str(e).splitlines()[0][:90]}")
