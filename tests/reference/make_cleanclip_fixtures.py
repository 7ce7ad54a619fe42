"""Records CleanCLIP's loss and its gradients for rvpt's `tests/cleanclip.rs`.

Run by hand, from the repository root, with torch, numpy and safetensors installed (CPU is enough):

    /tmp/torchenv/bin/python tests/reference/make_cleanclip_fixtures.py

The loss is CleanCLIP's `get_loss` (src/train.py, Bansal et al. 2023) written out for one device,
no unlearning: the embeddings are L2-normalised (CLIP's model does that before the loss), then

    crossmodal = (CE(s I Tᵀ, arange) + CE(s T Iᵀ, arange)) / 2
    inmodal    = (CE(s I I'ᵀ, arange) + CE(s T T'ᵀ, arange)) / 2
    loss       = crossmodal + w · inmodal,   s = exp(log_scale)

Seeded; rerunning rewrites the same fixture. Output: tests/fixtures/cleanclip.safetensors with
inputs `image`, `aug_image`, `text`, `aug_text` (6, 8), `log_scale` (), and per inmodal weight
w in {1, 0.5} (`w1`, `w0.5`): `{w}.loss`, `{w}.crossmodal`, and the gradient of the loss with
respect to every input, `{w}.grad.{input}`.
"""

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
B, D = 6, 8
inputs = {
    "image": torch.randn(B, D, dtype=torch.float64),
    "aug_image": torch.randn(B, D, dtype=torch.float64),
    "text": torch.randn(B, D, dtype=torch.float64),
    "aug_text": torch.randn(B, D, dtype=torch.float64),
    "log_scale": torch.tensor(2.6592, dtype=torch.float64),
}
# Make the augmented views resemble their originals, as real views do.
inputs["aug_image"] = inputs["image"] + 0.5 * inputs["aug_image"]
inputs["aug_text"] = inputs["text"] + 0.5 * inputs["aug_text"]

out = {k: v.float() for k, v in inputs.items()}
for w in [1.0, 0.5]:
    x = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    n = {k: F.normalize(x[k], dim=-1) for k in ["image", "aug_image", "text", "aug_text"]}
    s = x["log_scale"].exp()
    target = torch.arange(B)
    logits_text_per_image = s * n["image"] @ n["text"].t()
    crossmodal = (F.cross_entropy(logits_text_per_image, target)
                  + F.cross_entropy(logits_text_per_image.t(), target)) / 2
    inmodal = (F.cross_entropy(s * n["image"] @ n["aug_image"].t(), target)
               + F.cross_entropy(s * n["text"] @ n["aug_text"].t(), target)) / 2
    loss = crossmodal + w * inmodal
    loss.backward()
    tag = f"w{w:g}"
    out[f"{tag}.loss"] = loss.detach().float()
    out[f"{tag}.crossmodal"] = crossmodal.detach().float()
    for k in inputs:
        out[f"{tag}.grad.{k}"] = x[k].grad.float()

save_file({k: v.contiguous() for k, v in out.items()}, "tests/fixtures/cleanclip.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
