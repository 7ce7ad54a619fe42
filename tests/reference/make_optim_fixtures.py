"""Records PyTorch optimizer trajectories and LR schedules for rvpt's `tests/optim.rs`.

Run by hand, from the repository root, with torch and safetensors installed (CPU is enough):

    /tmp/ref/bin/python tests/reference/make_optim_fixtures.py

Everything is seeded; rerunning rewrites the same fixture. Output: tests/fixtures/optim.safetensors

The problem: inputs X (8, 4), Y (8, 3), C (5, 3), D (2, 3) and parameters W (4, 3), b (3,),
V (2, 5), plus U (3,) that takes no part in the loss, so it gets no gradient and must stay put
(torch skips parameters whose .grad is None, weight decay included):

    loss = sum((X @ W + b - Y)^2) + sum((tanh(V) @ C - D)^2)

Each run takes 20 steps with the learning rate set by a schedule before every step and stores
`{run}.{param}` (20, *shape): the parameter after each step, and `{run}.lr` (20,): the learning
rate each step used. Runs:

  sgd            SGD(momentum 0.9, weight_decay 5e-4), CosineAnnealingLR(T_max 20, eta_min 1e-4) per step
  sgd_nesterov   the same with nesterov=True
  sgd_damp       SGD(momentum 0.9, dampening 0.5), same schedule
  sgd_plain      SGD(momentum 0, weight_decay 5e-4), same schedule
  adamw          AdamW(betas (0.9, 0.999), eps 1e-8), groups [W, V, U] wd 0.1 and [b] wd 0,
                 warmup 3 steps (lr * (t + 1) / 3) then cosine to 0 over the other 17 steps

Schedules alone, as lists of learning rates read from the optimizer (f64):

  sched.cos      CosineAnnealingLR(base 0.1, T_max 10, eta_min 1e-3): t = 0..=10
  sched.warm     SequentialLR(LambdaLR((t + 1) / 5), CosineAnnealingLR(T_max 20, eta_min 1e-3)),
                 milestone 5, base 0.1: t = 0..25
  sched.one      CosineAnnealingLR(base 0.5, T_max 1, eta_min 0): t = 0..=1
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, SequentialLR

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "optim.safetensors"
STEPS = 20
NAMES = ["W", "b", "V", "U"]

torch.manual_seed(0)
torch.set_default_dtype(torch.float32)
data = {
    "X": torch.randn(8, 4),
    "Y": torch.randn(8, 3),
    "C": torch.randn(5, 3) * 0.5,
    "D": torch.randn(2, 3),
}
init = {
    "W": torch.randn(4, 3) * 0.3,
    "b": torch.randn(3) * 0.3,
    "V": torch.randn(2, 5) * 0.5,
    "U": torch.randn(3),
}


def loss_fn(p):
    ls = ((data["X"] @ p["W"] + p["b"] - data["Y"]) ** 2).sum()
    return ls + ((torch.tanh(p["V"]) @ data["C"] - data["D"]) ** 2).sum()


def run(make_opt, make_sched):
    params = {n: torch.nn.Parameter(init[n].clone()) for n in NAMES}
    opt = make_opt(params)
    sched = make_sched(opt)
    traj = {n: [] for n in NAMES}
    lrs = []
    first = last = None
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(params)
        loss.backward()
        first = loss.item() if first is None else first
        last = loss.item()
        opt.step()
        sched.step()
        for n in NAMES:
            traj[n].append(params[n].detach().clone())
    assert params["U"].grad is None
    return {n: torch.stack(v) for n, v in traj.items()}, torch.tensor(lrs, dtype=torch.float64), (first, last)


def sgd(**kw):
    return lambda p: torch.optim.SGD(list(p.values()), foreach=False, **kw)


def cosine(opt):
    return CosineAnnealingLR(opt, T_max=STEPS, eta_min=1e-4)


def warmup_cosine(warmup, total, eta_min):
    def make(opt):
        return SequentialLR(
            opt,
            [LambdaLR(opt, lambda t: (t + 1) / warmup), CosineAnnealingLR(opt, T_max=total - warmup, eta_min=eta_min)],
            milestones=[warmup],
        )

    return make


def adamw(p):
    groups = [
        {"params": [p["W"], p["V"], p["U"]], "weight_decay": 0.1},
        {"params": [p["b"]], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=0.05, betas=(0.9, 0.999), eps=1e-8, foreach=False)


RUNS = {
    "sgd": (sgd(lr=0.01, momentum=0.9, weight_decay=5e-4), cosine),
    "sgd_nesterov": (sgd(lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True), cosine),
    "sgd_damp": (sgd(lr=0.01, momentum=0.9, dampening=0.5), cosine),
    "sgd_plain": (sgd(lr=0.01, weight_decay=5e-4), cosine),
    "adamw": (adamw, warmup_cosine(3, STEPS, 0.0)),
}


def schedule(base, make_sched, n):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make_sched(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(lrs, dtype=torch.float64)


def main():
    out = dict(data)
    out.update({f"init.{n}": v for n, v in init.items()})
    for name, (make_opt, make_sched) in RUNS.items():
        traj, lrs, (first, last) = run(make_opt, make_sched)
        # A trajectory that diverges or stalls would test little.
        assert last < 0.5 * first, (name, first, last)
        print(f"{name}: loss {first:.4f} -> {last:.4f}")
        out.update({f"{name}.{n}": v for n, v in traj.items()})
        out[f"{name}.lr"] = lrs
    out["sched.cos"] = schedule(0.1, lambda o: CosineAnnealingLR(o, T_max=10, eta_min=1e-3), 11)
    out["sched.warm"] = schedule(0.1, warmup_cosine(5, 25, 1e-3), 25)
    out["sched.one"] = schedule(0.5, lambda o: CosineAnnealingLR(o, T_max=1, eta_min=0.0), 2)
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT), metadata={"torch": torch.__version__})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
