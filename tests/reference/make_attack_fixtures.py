"""Golden fixtures of rvpt's triggers and PR perturbations (src/attacks/) with PyTorch + torchvision.

Run by hand, from the repository root, in a venv outside the repo:

    python -m venv /tmp/ref && /tmp/ref/bin/pip install torch torchvision pillow safetensors numpy
    /tmp/ref/bin/python tests/reference/make_attack_fixtures.py

Writes tests/fixtures/attacks.safetensors (< 500 KB; library versions in its metadata). Everything
is seeded, so a rerun rewrites the same file. The random *parameters* (noise, locations,
patterns, WaNet control grids, jitter factors) are drawn here with torch and stored; tests/attacks.rs
feeds them to rvpt's pure apply functions and compares with the torch outputs stored beside them:

  x32 (2, 3, 32, 32)   chelsea.jpg resized to 32 px, and a random 8-bit image with grey and tied pixels
  x64 (1, 3, 64, 64)   chelsea.jpg resized to 64 px
  badnet_*             CleanCLIP's random patch: per-channel mean + N(0, 1) noise at (row, col)
  patch_*              a given (3, 7, 7) patch pasted at the centre
  blended_*            clip(0.2 * pattern + 0.8 * x, 0, 1)
  wanet_k4_*           k = 4, s = 0.5 on x64 (BackdoorBench); wanet_kh_*: k = H = 32, s = 1 on x32 (CleanCLIP)
  lc_*                 Turner et al.'s four-corner checkerboard, x + amp * P clamped, cell = 2
  noise_*, blur3, blur5, brightness_*, hue_*, flip   the PR perturbations (torchvision functional)
"""

import json
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
g = torch.Generator().manual_seed(20261126)


def photo(size):
    img = Image.open(FIX / "images" / "chelsea.jpg").convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def random_image(size):
    x = torch.randint(0, 256, (3, size, size), generator=g).float()
    x[:, 0, :] = x[0, 0, :]           # a grey row: r = g = b, the hue code's maxc == minc branch
    x[1, 1, :] = x[0, 1, :]           # r = g ties
    x[2, 2, :] = x[1, 2, :]           # g = b ties
    x[:, 3, :4] = torch.tensor([0.0, 255.0, 0.0, 255.0])  # black and white pixels
    return x / 255


# ---------------------------------------------------------------- triggers (CleanCLIP / BackdoorBench semantics)
def badnet(img, noise, row, col):
    """CleanCLIP apply_trigger(patch_type="random"): the patch is mean + noise, not clamped."""
    out = img.clone()
    p = noise.shape[-1]
    out[:, row:row + p, col:col + p] = img.mean((1, 2), keepdim=True) + noise
    return out


def wanet(x, ins, s):
    """BackdoorBench / CleanCLIP WaNet with a given (1, 2, k, k) control grid."""
    h, w = x.shape[-2:]
    ins = ins / torch.mean(torch.abs(ins))
    noise_grid = F.interpolate(ins, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    identity = torch.stack((cols, rows), 2)[None]
    grid = torch.clamp(identity + s * noise_grid / h, -1, 1)
    return F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def corner_checkerboard(h, w, cell):
    """+1 white / -1 black 3x3-cell checkerboard in each corner, the extreme corner pixel white."""
    p = np.zeros((h, w), np.float32)
    side = 3 * cell
    for y in range(h):
        for x in range(w):
            dy, dx = min(y, h - 1 - y), min(x, w - 1 - x)
            if dy < side and dx < side:
                p[y, x] = 1.0 if (dy // cell + dx // cell) % 2 == 0 else -1.0
    return torch.from_numpy(p)


def main():
    x32 = torch.stack([photo(32), random_image(32)])
    x64 = photo(64)[None]
    t = {"x32": x32, "x64": x64}

    # BadNet, 8 px patches on 32 px images; the locations span CleanCLIP's range [0, H - 1 - p].
    p = 8
    t["badnet_noise"] = torch.randn(2, 3, p, p, generator=g)
    t["badnet_loc"] = torch.tensor([[0, 23], [17, 5]], dtype=torch.int64)
    t["badnet_out"] = torch.stack([badnet(x32[i], t["badnet_noise"][i], *t["badnet_loc"][i].tolist()) for i in range(2)])

    # An optimised patch (odd size: the centre rounds down) pasted at the centre.
    t["patch"] = torch.rand(3, 7, 7, generator=g) * 1.4 - 0.2
    out = x32.clone()
    top = (32 - 7) // 2
    out[:, :, top:top + 7, top:top + 7] = t["patch"]
    t["patch_out"] = out

    # Blended: per-image U(0, 1) pattern.
    t["blended_pattern"] = torch.rand(2, 3, 32, 32, generator=g)
    t["blended_out"] = torch.clip(0.2 * t["blended_pattern"] + 0.8 * x32, 0, 1)

    # WaNet: raw U(-1, 1) control grids, as drawn by torch.rand * 2 - 1.
    t["wanet_k4_control"] = torch.rand(2, 4, 4, generator=g) * 2 - 1
    t["wanet_k4_s"] = torch.tensor([0.5])
    t["wanet_k4_out"] = wanet(x64, t["wanet_k4_control"][None], 0.5)
    t["wanet_kh_control"] = torch.rand(2, 32, 32, generator=g) * 2 - 1
    t["wanet_kh_s"] = torch.tensor([1.0])
    t["wanet_kh_out"] = wanet(x32, t["wanet_kh_control"][None], 1.0)

    # Label-consistent corners with a reduced amplitude (Turner et al.'s 64/255) and 2 px cells.
    amp, cell = 64 / 255, 2
    t["lc_amp"] = torch.tensor([amp], dtype=torch.float32)
    t["lc_cell"] = torch.tensor([cell], dtype=torch.int64)
    t["lc_out"] = (x32 + t["lc_amp"] * corner_checkerboard(32, 32, cell)).clamp(0, 1)

    # PR perturbations.
    t["noise"] = torch.randn(3, 32, 32, generator=g)
    t["noise_std"] = torch.tensor([0.03])
    t["noise_out"] = (x32[0] + t["noise_std"] * t["noise"]).clamp(0, 1)
    t["blur3_out"] = TF.gaussian_blur(x32, [3, 3])
    t["blur5_out"] = TF.gaussian_blur(x64, [5, 5])
    t["brightness_factors"] = torch.tensor([0.6, 1.4])  # 1.4 saturates bright pixels
    t["brightness_out"] = torch.stack([TF.adjust_brightness(x32[i], float(f)) for i, f in enumerate(t["brightness_factors"])])
    t["hue_factors"] = torch.tensor([-0.3, 0.45])
    t["hue_out"] = torch.stack([TF.adjust_hue(x32[i], float(f)) for i, f in enumerate(t["hue_factors"])])
    t["flip_out"] = TF.hflip(x32)

    out_path = FIX / "attacks.safetensors"
    # One metadata key: safetensors writes several in random order, and the bytes should not churn.
    versions = json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                           "pillow": PIL.__version__, "python": sys.version.split()[0]})
    save_file({k: v.contiguous() for k, v in t.items()}, out_path, metadata={"versions": versions})
    size = out_path.stat().st_size
    print(f"wrote {out_path} ({size / 1024:.0f} KiB, {len(t)} tensors)")
    assert size < 500_000, size


if __name__ == "__main__":
    main()
