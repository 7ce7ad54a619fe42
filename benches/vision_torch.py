"""PyTorch side of `cargo run --release --example bench_vision`: transformers' CLIPVisionModel with
random ViT-B/32 weights, images/s of the image encoder, f32 or under autocast (bf16/f16), on the
CPU or a GPU. Prints one JSON line.

    python benches/vision_torch.py --batch 32 --iters 5 --threads 2 [--device cuda] [--dtype bf16]
"""

import argparse
import json
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=32)
p.add_argument("--iters", type=int, default=5)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
a = p.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(0)
dev = torch.device(a.device)
model = CLIPVisionModel(CLIPVisionConfig()).eval().to(dev)  # defaults = ViT-B/32
model.config._attn_implementation = a.attn
x = torch.randn(a.batch, 3, 224, 224, device=dev)
half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.dtype)
autocast = torch.autocast(dev.type, dtype=half, enabled=half is not None)
with torch.inference_mode(), autocast:
    model(pixel_values=x)  # warm-up
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        model(pixel_values=x).pooler_output.sum().item()  # .item() waits for the device
        times.append(time.perf_counter() - t)
best = min(times)
print(json.dumps({
    "impl": f"torch {torch.__version__} ({a.attn}, {a.device}, {a.dtype}{' autocast' if half else ''})",
    "blas": "MKL" if torch.backends.mkl.is_available() else "OpenBLAS/other",
    "threads": torch.get_num_threads(),
    "batch": a.batch,
    "median_s": sorted(times)[len(times) // 2],
    "best_s": best,
    "images_per_s": a.batch / sorted(times)[len(times) // 2],
}))
