"""PyTorch side of `cargo run --release --example bench_vision`: transformers' CLIPVisionModel with
random ViT-B/32 weights, f32 on CPU, images/s of the image encoder. Prints one JSON line.

    python benches/vision_torch.py --batch 32 --iters 5 --threads 2
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
a = p.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(0)
model = CLIPVisionModel(CLIPVisionConfig()).eval()  # defaults = ViT-B/32
model.config._attn_implementation = a.attn
x = torch.randn(a.batch, 3, 224, 224)
with torch.inference_mode():
    model(pixel_values=x)  # warm-up
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        model(pixel_values=x).pooler_output.sum().item()
        times.append(time.perf_counter() - t)
best = min(times)
print(json.dumps({
    "impl": f"torch {torch.__version__} ({a.attn})",
    "blas": "MKL" if torch.backends.mkl.is_available() else "OpenBLAS/other",
    "threads": torch.get_num_threads(),
    "batch": a.batch,
    "median_s": sorted(times)[len(times) // 2],
    "best_s": best,
    "images_per_s": a.batch / sorted(times)[len(times) // 2],
}))
