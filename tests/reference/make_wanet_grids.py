"""WaNet grid files as CleanCLIP and BackdoorBench save them, and golden warps, for tests/attacks.rs.
Run by hand:

    python tests/reference/make_wanet_grids.py            # writes tests/fixtures/wanet/
    python tests/reference/make_wanet_grids.py --check DIR  # torch.load()s the files rvpt wrote

The grid follows both projects' recipe (torch.rand control in [-1, 1], divided by its mean
absolute value, bicubic upsampling with align_corners, .permute(0, 2, 3, 1)), so the saved noise
grid is a permuted, channel-first view exactly as theirs. CleanCLIP saves the bare tensor;
BackdoorBench's attack/wanet.py saves a dict with identity_grid and noise_grid next to the model.
The warp: grid_sample(image, clamp(identity + s * noise / H, -1, 1), align_corners=True).
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "wanet"
H, K = 32, 4


def identity(h):
    lin = torch.linspace(-1, 1, steps=h)
    x, y = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack((y, x), 2)[None, ...]


def warp(image, noise, s):
    grid = torch.clamp(identity(noise.shape[1]) + s * noise / noise.shape[1], -1, 1)
    return F.grid_sample(image, grid, align_corners=True)


if len(sys.argv) == 3 and sys.argv[1] == "--check":
    d = Path(sys.argv[2])
    bare = torch.load(d / "cleanclip.pt", weights_only=True)
    state = torch.load(d / "backdoorbench.pt", weights_only=True)
    want = torch.load(OUT / "cleanclip_noise_grid.pt", weights_only=True)
    print("rvpt's CleanCLIP file:", tuple(bare.shape), bare.stride(), "max diff", (bare - want).abs().max().item())
    print("rvpt's BackdoorBench file: keys", sorted(state), "noise max diff",
          (state["noise_grid"] - want).abs().max().item(),
          "identity max diff", (state["identity_grid"] - identity(H)).abs().max().item())
    sys.exit(0)

OUT.mkdir(parents=True, exist_ok=True)
g = torch.Generator().manual_seed(5)
control = torch.rand(1, 2, K, K, generator=g) * 2 - 1
ins = control / torch.mean(torch.abs(control))
noise = F.interpolate(ins, size=H, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
assert not noise.is_contiguous()
torch.save(noise, OUT / "cleanclip_noise_grid.pt")
torch.save(
    {
        "netC": {"linear.weight": torch.zeros(2, 2)},
        "schedulerC": {},
        "optimizerC": {},
        "epoch_current": 3,
        "identity_grid": identity(H),
        "noise_grid": noise,
    },
    OUT / "backdoorbench_state_dict.pt",
)
image = torch.rand(1, 3, H, H, generator=g)
save_file(
    {
        "control": control[0].contiguous(),
        "noise": noise[0].contiguous(),
        "image": image[0].contiguous(),
        "warped_s1": warp(image, noise, 1.0)[0].contiguous(),
        "warped_s05": warp(image, noise, 0.5)[0].contiguous(),
    },
    OUT / "golden.safetensors",
)
print("noise", tuple(noise.shape), noise.stride(), "mean |noise|", noise.abs().mean().item())
