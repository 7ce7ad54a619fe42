"""Golden outputs of the RVPT forward, loss, prompt gradients and five SGD steps, in PyTorch on
the tiny fixture CLIP (tests/fixtures/tiny). Run by hand after make_fixtures.py:

    /tmp/ref/bin/python tests/reference/make_rvpt_fixtures.py

Writes tests/fixtures/rvpt.safetensors. The prompted forward follows VPT-deep: m prompt tokens
appended after [CLS] + patches at each of the last D blocks, replacing the previous block's
prompt outputs, no positional embedding.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPModel

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
DEPTH, LENGTH, LAMBDA = 6, 5, 2.0

torch.manual_seed(0)
model = CLIPModel.from_pretrained(FIX / "tiny", attn_implementation="eager", dtype=torch.float32).eval()
for p in model.parameters():
    p.requires_grad_(False)
vm = model.vision_model
layers = vm.encoder.layers
L = len(layers)
first = L - DEPTH

g = torch.Generator().manual_seed(3)
pixels = torch.randn(4, 3, 32, 32, generator=g)
labels = torch.tensor([0, 2, 1, 2])
text = F.normalize(torch.randn(3, model.config.projection_dim, generator=g), dim=-1)
prompts0 = torch.randn(DEPTH, LENGTH, vm.config.hidden_size, generator=g) * 0.02


def run(prompts, layerwise):
    x = vm.pre_layrnorm(vm.embeddings(pixels))
    for layer in layers[:first]:
        x = layer(x, None)
    prefix = x
    n = prefix.shape[1]
    f = prefix
    frozen_cls = []
    for layer in layers[first:]:
        f = layer(f, None)
        frozen_cls.append(f[:, 0])
    frozen = vm.post_layernorm(f[:, 0])
    x = prefix
    prompted_cls = []
    for j, layer in enumerate(layers[first:]):
        x = torch.cat([x[:, :n], prompts[j].unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = layer(x, None)
        prompted_cls.append(x[:, 0])
    pooled = vm.post_layernorm(x[:, 0])
    emb = F.normalize(model.visual_projection(pooled), dim=-1)
    logits = model.logit_scale.exp() * emb @ text.t()
    ce = F.cross_entropy(logits, labels)
    if layerwise:
        fr = F.cosine_similarity(torch.cat(prompted_cls), torch.cat(frozen_cls), dim=-1).mean()
    else:
        fr = F.cosine_similarity(pooled, frozen, dim=-1).mean()
    return ce + LAMBDA * fr, ce, fr, pooled, frozen


out = {"pixels": pixels, "labels": labels.to(torch.int64), "text": text, "prompts0": prompts0}
for name, layerwise in (("final", False), ("layerwise", True)):
    prompts = prompts0.clone().requires_grad_(True)
    loss, ce, fr, pooled, frozen = run(prompts, layerwise)
    loss.backward()
    out[f"{name}.loss"] = torch.stack([loss.detach(), ce.detach(), fr.detach()])
    out[f"{name}.grad"] = prompts.grad.clone()
    if name == "final":
        out["pooled"] = pooled.detach()
        out["frozen"] = frozen.detach()

# Five SGD steps with the paper's settings (one batch, fixed lr).
prompts = prompts0.clone().requires_grad_(True)
opt = torch.optim.SGD([prompts], lr=0.002, momentum=0.9, weight_decay=5e-4)
for _ in range(5):
    opt.zero_grad()
    loss = run(prompts, False)[0]
    loss.backward()
    opt.step()
out["sgd5.prompts"] = prompts.detach().clone()
save_file({k: v.contiguous() for k, v in out.items()}, FIX / "rvpt.safetensors")
print("final loss", out["final.loss"].tolist(), "layerwise", out["layerwise.loss"].tolist())
