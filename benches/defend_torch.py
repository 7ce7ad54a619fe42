"""PyTorch side of `cargo run --release --example bench_defend`: the same cache-mode RVPT defence
on the same synthetic images (written by the example), with a random ViT-B/32 from transformers.
Setup: decode + CLIP preprocessing (bicubic resize, centre crop, CLIP mean/std) + the frozen
prefix (blocks 0..6) and the frozen feature, once, in batches of 32. Then `--timed-epochs` epochs of
SGD (momentum 0.9, weight decay 5e-4, lr 0.002 cosine) on 50 prompt tokens in blocks 6..12,
CE + 2 * FR, batch 32; the 50-epoch time is projected from the setup and the last epoch.
`--dtype bf16|f16` runs the forward passes under autocast. Prints one JSON line.

    python benches/defend_torch.py --images DIR --classes 1000 --shots 16 [--device cuda] [--dtype bf16]
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel

p = argparse.ArgumentParser()
p.add_argument("--images", required=True)
p.add_argument("--classes", type=int, default=1000)
p.add_argument("--shots", type=int, default=16)
p.add_argument("--timed-epochs", type=int, default=2)
p.add_argument("--epochs", type=int, default=50)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
a = p.parse_args()
dev = torch.device(a.device)
torch.set_num_threads(a.threads)
torch.manual_seed(0)
half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.dtype)


def autocast():
    return torch.autocast(dev.type, dtype=half, enabled=half is not None)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


model = CLIPVisionModel(CLIPVisionConfig()).eval().to(dev)
model.config._attn_implementation = "sdpa"
for q in model.parameters():
    q.requires_grad_(False)
layers = model.encoder.layers
first = len(layers) - 6
proj = torch.randn(768, 512, device=dev) * 0.02
text = F.normalize(torch.randn(a.classes, 512, device=dev), dim=-1)
prompts = (torch.randn(6, 50, 768, device=dev) * 0.02).requires_grad_(True)
opt = torch.optim.SGD([prompts], lr=0.002, momentum=0.9, weight_decay=5e-4)
mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def load(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = 224 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - mean) / std


samples = [
    (os.path.join(a.images, f"class{c:04}", f"{s:02}.png"), c)
    for c in range(a.classes)
    for s in range(a.shots)
]
t0 = time.perf_counter()
prefixes, targets = [], []
with torch.no_grad(), autocast():
    for i in range(0, len(samples), a.batch):
        x = torch.stack([load(p) for p, _ in samples[i : i + a.batch]]).to(dev)
        h = model.pre_layrnorm(model.embeddings(x))
        for layer in layers[:first]:
            h = layer(h, None)
        prefixes.append(h)
        f = h
        for layer in layers[first:]:
            f = layer(f, None)
        targets.append(model.post_layernorm(f[:, 0]))
prefix, target = torch.cat(prefixes), torch.cat(targets)
labels = torch.tensor([c for _, c in samples], device=dev)
sync()
setup = time.perf_counter() - t0

epoch_s = []
g = torch.Generator().manual_seed(0)
for epoch in range(a.timed_epochs):
    for group in opt.param_groups:  # cosine annealing per epoch, as rvpt
        group["lr"] = 0.002 * 0.5 * (1 + math.cos(math.pi * epoch / a.timed_epochs))
    t = time.perf_counter()
    order = torch.randperm(len(samples), generator=g).to(dev)
    for i in range(0, len(samples), a.batch):
        idx = order[i : i + a.batch]
        x, frozen, y = prefix[idx], target[idx], labels[idx]
        n = x.shape[1]
        with autocast():
            for j, layer in enumerate(layers[first:]):
                x = torch.cat([x[:, :n], prompts[j].unsqueeze(0).expand(x.shape[0], -1, -1)], 1)
                x = layer(x, None)
            pooled = model.post_layernorm(x[:, 0])
            logits = 100.0 * F.normalize(pooled @ proj, dim=-1) @ text.t()
            loss = F.cross_entropy(logits, y) + 2.0 * F.cosine_similarity(pooled, frozen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync()
    epoch_s.append(time.perf_counter() - t)
print(json.dumps({
    "impl": f"torch {torch.__version__} (sdpa, {a.device}, {a.dtype}{' autocast' if half else ''}, {torch.get_num_threads()} threads)",
    "images": len(samples),
    "setup_s": setup,
    "epoch_s": [round(s, 2) for s in epoch_s],
    "projected_s": setup + a.epochs * epoch_s[-1],
}))
