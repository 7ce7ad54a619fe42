"""Where does a toy backdoor live? Splices two toy CLIPs' image towers at block k: the stem and
blocks < k come from one model, blocks >= k and the head from the other (text tower: the
backdoored model's). Run by hand; evaluate each spliced model with `rvpt eval`:

    python tests/reference/splice_blocks.py models/toy/clean models/toy/badnet OUT 3 6 9

writes OUT/early-K (backdoored stem + blocks < K, clean rest) and OUT/late-K (the reverse).
"""
import json
import shutil
import sys
from pathlib import Path

from safetensors.numpy import load_file, save_file


def block_of(name):
    prefix = "vision_model.encoder.layers."
    if not name.startswith(prefix):
        return None
    return int(name[len(prefix):].split(".")[0])


def is_stem(name):
    return name.startswith(("vision_model.embeddings.", "vision_model.pre_layrnorm."))


def splice(lower, upper, k):
    """Stem and blocks < k from `lower`, everything else of the image tower from `upper`."""
    out = {}
    for name, value in upper.items():
        b = block_of(name)
        take_lower = is_stem(name) or (b is not None and b < k)
        out[name] = lower[name] if take_lower else value
    return out


def main():
    clean_dir, bad_dir, out_dir = (Path(p) for p in sys.argv[1:4])
    ks = [int(k) for k in sys.argv[4:]]
    clean = load_file(str(clean_dir / "model.safetensors"))
    bad = load_file(str(bad_dir / "model.safetensors"))
    text = {n: v for n, v in bad.items() if not n.startswith(("vision_model.", "visual_projection"))}
    for k in ks:
        for kind, (lower, upper) in {"early": (bad, clean), "late": (clean, bad)}.items():
            tensors = splice(lower, upper, k)
            tensors.update(text)
            d = out_dir / f"{kind}-{k}"
            d.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(d / "model.safetensors"))
            for f in ("config.json", "tokenizer.json"):
                shutil.copy(bad_dir / f, d / f)
            print(json.dumps({"dir": str(d), "backdoored_blocks": f"<{k}" if kind == "early" else f">={k}"}))


if __name__ == "__main__":
    main()
