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


def run(prompts, layerwise, start=None, repel=None):
    """The RVPT loss with prompts in blocks start..start+len(prompts) (default: the last D) and FR
    on the final feature, on the [CLS] after every prompted block (`layerwise`), or on the [CLS]
    after the blocks in `repel`. Above the prompted blocks the prompt outputs are carried along."""
    start = first if start is None else start
    depth = prompts.shape[0]
    if layerwise:
        repel = list(range(start, start + depth))
    x = vm.pre_layrnorm(vm.embeddings(pixels))
    for layer in layers[:start]:
        x = layer(x, None)
    prefix = x
    n = prefix.shape[1]
    f = prefix
    frozen_cls = {}
    for i, layer in enumerate(layers[start:], start):
        f = layer(f, None)
        frozen_cls[i] = f[:, 0]
    frozen = vm.post_layernorm(f[:, 0])
    x = prefix
    prompted_cls = {}
    for i, layer in enumerate(layers[start:], start):
        j = i - start
        if j < depth:
            x = torch.cat([x[:, :n], prompts[j].unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = layer(x, None)
        prompted_cls[i] = x[:, 0]
    pooled = vm.post_layernorm(x[:, 0])
    emb = F.normalize(model.visual_projection(pooled), dim=-1)
    logits = model.logit_scale.exp() * emb @ text.t()
    ce = F.cross_entropy(logits, labels)
    if repel is not None:
        p = torch.cat([prompted_cls[i] for i in repel])
        q = torch.cat([frozen_cls[i] for i in repel])
        fr = F.cosine_similarity(p, q, dim=-1).mean()
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

# The placement ablations: prompts in blocks 2..5 (the first 3 of prompts0), FR at blocks 6, 9
# and 11 (above the prompts, so the prompt outputs are carried through blocks 5-11).
prompts = prompts0[:3].clone().requires_grad_(True)
loss, ce, fr, _, _ = run(prompts, False, start=2, repel=[6, 9, 11])
loss.backward()
out["placed.loss"] = torch.stack([loss.detach(), ce.detach(), fr.detach()])
out["placed.grad"] = prompts.grad.clone()

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
print("final loss", out["final.loss"].tolist(), "layerwise", out["layerwise.loss"].tolist(),
      "placed", out["placed.loss"].tolist())
