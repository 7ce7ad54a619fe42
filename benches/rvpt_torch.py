"""PyTorch side of `cargo run --release --example bench_rvpt`: one RVPT training step (prompted
forward through the last 6 of 12 ViT-B/32 blocks with 50 prompt tokens, frozen branch, CE +
2 * FR, backward to the prompts, SGD with momentum) with random weights, batch 32, f32 or under
autocast (`--dtype bf16|f16`: f32 weights and prompts, half matmuls), CPU (or `--device cuda`).
Prints one JSON line with samples/s and peak RSS.

    python benches/rvpt_torch.py --batch 32 --iters 3 --threads 2 [--device cuda --iters 20] [--dtype bf16]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=32)
p.add_argument("--iters", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--depth", type=int, default=6)
p.add_argument("--length", type=int, default=50)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
a = p.parse_args()
half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.dtype)
dev = torch.device(a.device)
torch.set_num_threads(a.threads)
torch.manual_seed(0)

model = CLIPVisionModel(CLIPVisionConfig()).eval().to(dev)
model.config._attn_implementation = "sdpa"
vm = model  # transformers 5: CLIPVisionModel holds the tower's modules directly
for q in vm.parameters():
    q.requires_grad_(False)
proj = torch.randn(768, 512, device=dev) * 0.02
text = F.normalize(torch.randn(10, 512, device=dev), dim=-1)
layers = vm.encoder.layers
first = len(layers) - a.depth
prompts = (torch.randn(a.depth, a.length, 768, device=dev) * 0.02).requires_grad_(True)
opt = torch.optim.SGD([prompts], lr=0.002, momentum=0.9, weight_decay=5e-4)
x_in = torch.randn(a.batch, 3, 224, 224, device=dev)
labels = torch.randint(0, 10, (a.batch,), device=dev)


def step():
    with torch.autocast(dev.type, dtype=half, enabled=half is not None):
        loss = forward()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()  # time the work, not its launch


def forward():
    with torch.no_grad():
        x = vm.pre_layrnorm(vm.embeddings(x_in))
        for layer in layers[:first]:
            x = layer(x, None)
        prefix = x
        f = prefix
        for layer in layers[first:]:
            f = layer(f, None)
        frozen = vm.post_layernorm(f[:, 0])
    n = prefix.shape[1]
    x = prefix
    for j, layer in enumerate(layers[first:]):
        x = torch.cat([x[:, :n], prompts[j].unsqueeze(0).expand(a.batch, -1, -1)], 1)
        x = layer(x, None)
    pooled = vm.post_layernorm(x[:, 0])
    logits = 100.0 * F.normalize(pooled @ proj, dim=-1) @ text.t()
    return F.cross_entropy(logits, labels) + 2.0 * F.cosine_similarity(pooled, frozen).mean()


step()  # warm-up
times, cpu = [], []
for _ in range(a.iters):
    t, c = time.perf_counter(), time.process_time()
    step()
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
med = sorted(times)[len(times) // 2]
print(json.dumps({
    "impl": f"torch {torch.__version__} (sdpa, {a.device}, {a.dtype}{' autocast' if half else ''})",
    "blas": "MKL" if torch.backends.mkl.is_available() else "other",
    "threads": torch.get_num_threads(),
    "median_s": med,
    "samples_per_s": a.batch / med,
    # CPU time of all threads (user + system): steadier than wall time on shared cores.
    "median_cpu_s": sorted(cpu)[len(cpu) // 2],
    # VmHWM, not ru_maxrss: the latter keeps the launching process's peak across exec.
    "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
    "peak_rss_mb": next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024,
}))
