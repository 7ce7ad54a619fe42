"""Records Pillow's bicubic resize for rvpt's `tests/preprocess.rs` (`pil_resize_is_bit_exact`).

Run by hand, from the repository root, with Pillow, numpy, torch and safetensors installed:

    /tmp/torchenv/bin/python tests/reference/make_resize_fixtures.py

Inputs are lossless, so rvpt decodes the same pixels: the PNG fixtures (coffee.png 300x200 RGB,
camera.png 240x320 grayscale, converted to RGB as CLIP does) and a synthetic pattern that rvpt
regenerates from the same formula, (x * 7 + y * 13 + c * 101 + (x * y) % 31) % 256. Each is
resized with `Image.resize((w, h), Image.BICUBIC)` (no reducing_gap, as torchvision and
transformers call it). Output: tests/fixtures/resize.safetensors, u8 (h, w, 3) per case:

    coffee_336x224     coffee.png, short side to 224 (CLIP's size; an enlargement)
    camera_224x298     camera.png, short side to 224 (a slight reduction)
    pattern451x300_168x112   the pattern at 451x300, reduced 2.7x (widened support)
    pattern37x23_91x57       the pattern at 37x23, enlarged about 2.5x
"""

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file


def pattern(w, h):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return Image.fromarray(((x * 7 + y * 13 + c * 101 + (x * y) % 31) % 256).astype(np.uint8))


cases = {
    "coffee_336x224": (Image.open("tests/fixtures/images/coffee.png").convert("RGB"), (336, 224)),
    "camera_224x298": (Image.open("tests/fixtures/images/camera.png").convert("RGB"), (224, 298)),
    "pattern451x300_168x112": (pattern(451, 300), (168, 112)),
    "pattern37x23_91x57": (pattern(37, 23), (91, 57)),
}
out = {}
for name, (img, size) in cases.items():
    out[name] = torch.from_numpy(np.asarray(img.resize(size, Image.BICUBIC)).copy())
save_file(out, "tests/fixtures/resize.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
