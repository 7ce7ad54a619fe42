"""Fixtures of rvpt's open_clip tests (tests/open_clip.rs): tiny random ViTs at the shape rules of
ViT-B/16 and ViT-L/14, saved in open_clip's layout with an `open_clip_config.json`, and what
open_clip and transformers compute with them under GELU and QuickGELU.

Run by hand, from the repository root, in a venv outside the repo:

    python3 -m venv /work/venv && /work/venv/bin/pip install torch transformers open_clip_torch pillow safetensors
    /work/venv/bin/python tests/reference/make_open_clip_fixtures.py

Everything is seeded. Outputs, one folder per shape rule under tests/fixtures/:

  openclip-b16/  patch 16, head_width 16 (2 heads of a 32-wide tower), mlp_ratio 4, 32 px; the full
                 CLIP vocabulary, so the test can run zero-shot through rvpt's tokenizer. Its token
                 embedding is zero except the rows the prompts use, stored compactly
                 (`weights.safetensors`: `token_rows` + `token_embedding_rows`): the test writes the
                 full `open_clip_model.safetensors` (what open_clip ran) into a hub-cache layout.
                 `preprocess_cfg` has ImageNet's mean/std, not CLIP's.
  openclip-l14/  patch 14, head_width 16 (3 heads of 48), mlp_ratio 3.7 (int(48*3.7) = 177), 42 px,
                 vocab 100, context 16, 3 text heads of 24: open_clip's own local layout
                 (`open_clip_pytorch_model.bin` + `open_clip_config.json`).
  openclip-bare/ a state dict alone (`open_clip_pytorch_model.bin`, widths 64 so OpenAI's
                 heads = width / 64 infers it), its model config kept bare as open_clip's
                 model_configs/*.json are (`ViT-tiny.json`, `ViT-tiny-quickgelu.json`), for the
                 test to place beside it.
  each: open_clip_config.json (GELU, as open_clip's `ViT-B-32.json`: no `quick_gelu` key),
        open_clip_config-quickgelu.json, config-gelu.json / config-quick_gelu.json (transformers'
        CLIPConfig of the same model), expected.safetensors (inputs; per activation, open_clip's
        and transformers' embeddings and logits, and for b16 open_clip's zero-shot probabilities
        and preprocessed pixels of tests/fixtures/images), expected.json (labels, images, prompts).
"""

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

VARIANTS = {
    "openclip-b16": dict(
        model_cfg=dict(
            embed_dim=16,
            vision_cfg=dict(layers=2, width=32, head_width=16, mlp_ratio=4.0, patch_size=16, image_size=32),
            text_cfg=dict(context_length=77, vocab_size=49408, width=16, heads=2, layers=2),
        ),
        preprocess_cfg=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic", resize_mode="shortest"),
        checkpoint="open_clip_model.safetensors",
        zero_shot=True,
    ),
    "openclip-l14": dict(
        model_cfg=dict(
            embed_dim=24,
            vision_cfg=dict(layers=1, width=48, head_width=16, mlp_ratio=3.7, patch_size=14, image_size=42),
            text_cfg=dict(context_length=16, vocab_size=100, width=24, heads=3, layers=1, mlp_ratio=4.0),
        ),
        preprocess_cfg=None,
        checkpoint="open_clip_pytorch_model.bin",
        zero_shot=False,
    ),
    # A state dict alone: widths OpenAI's heads = width / 64 infers; its model config is kept
    # bare (as open_clip's model_configs/*.json) under another name, for the test to place.
    "openclip-bare": dict(
        model_cfg=dict(
            embed_dim=16,
            vision_cfg=dict(layers=1, width=64, head_width=64, mlp_ratio=1.0, patch_size=8, image_size=16),
            text_cfg=dict(context_length=8, vocab_size=100, width=64, heads=1, layers=1, mlp_ratio=1.0),
        ),
        preprocess_cfg=None,
        checkpoint="open_clip_pytorch_model.bin",
        zero_shot=False,
        bare=True,
    ),
}
LABELS = ["cat", "coffee", "astronaut", "man with a camera", "rocket"]
# No RGBA image: open_clip drops alpha (`convert("RGB")`), transformers and rvpt composite on white.
IMAGES = ["chelsea.jpg", "coffee.png", "astronaut.webp", "camera.png"]


def prompts():
    return [f"a photo of a {c}." for c in LABELS]


def randomise(model, seed):
    """Weights far from init (so GELU and QuickGELU differ clearly), rounded to f16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name == "logit_scale":
                p.fill_(math.log(100.0))  # a trained CLIP's (the clamp): sharp probabilities
            elif "ln" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * r)
            elif name.endswith("bias") or p.dim() == 1:
                p.copy_(0.2 * r)
            elif "embedding" in name:
                p.copy_(0.5 * r)
            else:
                fan_in = p.shape[0] if name.endswith(("proj", "projection")) else p.shape[-1] if p.dim() == 2 else p[0].numel()
                p.copy_(1.5 * r / math.sqrt(fan_in))
            p.copy_(p.half().float())


def openai_to_hf(sd):
    """open_clip / OpenAI names → transformers names (src/model/openai.rs does the same)."""
    out = {}
    for prefix, tower in (("visual.", "vision_model"), ("", "text_model")):
        blocks = {k[len(prefix) + len("transformer.resblocks."):].split(".")[0]
                  for k in sd if k.startswith(prefix + "transformer.resblocks.")}
        for i in blocks:
            q = f"{prefix}transformer.resblocks.{i}."
            p = f"{tower}.encoder.layers.{i}."
            for kind in ("weight", "bias"):
                for j, n in enumerate("qkv"):
                    t = sd[q + f"attn.in_proj_{kind}"]
                    w = t.shape[0] // 3
                    out[p + f"self_attn.{n}_proj.{kind}"] = t[j * w:(j + 1) * w]
                for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                    out[p + f"{b}.{kind}"] = sd[q + f"{a}.{kind}"]
    v = "vision_model."
    out[v + "embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    out[v + "embeddings.class_embedding"] = sd["visual.class_embedding"]
    out[v + "embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for s in ("weight", "bias"):
            out[f"{v}{b}.{s}"] = sd[f"visual.{a}.{s}"]
    out["visual_projection.weight"] = sd["visual.proj"].t()
    t = "text_model."
    out[t + "embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out[t + "embeddings.position_embedding.weight"] = sd["positional_embedding"]
    for s in ("weight", "bias"):
        out[f"{t}final_layer_norm.{s}"] = sd[f"ln_final.{s}"]
    out["text_projection.weight"] = sd["text_projection"].t()
    out["logit_scale"] = sd["logit_scale"]
    return {k: v.contiguous() for k, v in out.items()}


def transformers_config(mc, act):
    v, t = mc["vision_cfg"], mc["text_cfg"]
    return dict(
        projection_dim=mc["embed_dim"],
        logit_scale_init_value=2.6592,
        vision_config=dict(hidden_size=v["width"], intermediate_size=int(v["width"] * v["mlp_ratio"]),
                           num_attention_heads=v["width"] // v["head_width"], num_hidden_layers=v["layers"],
                           image_size=v["image_size"], patch_size=v["patch_size"], hidden_act=act),
        text_config=dict(hidden_size=t["width"], intermediate_size=int(t["width"] * t.get("mlp_ratio", 4.0)),
                         num_attention_heads=t["heads"], num_hidden_layers=t["layers"],
                         max_position_embeddings=t["context_length"], vocab_size=t["vocab_size"],
                         hidden_act=act, eos_token_id=2),
    )


def hub_config(spec, quick_gelu):
    mc = json.loads(json.dumps(spec["model_cfg"]))
    if quick_gelu:
        mc["quick_gelu"] = True
    cfg = {"model_cfg": mc}
    if spec["preprocess_cfg"]:
        cfg["preprocess_cfg"] = spec["preprocess_cfg"]
    return cfg


def config_files(spec):
    """(activation, file name, content) of the open_clip configs a variant ships."""
    if spec.get("bare"):
        return [("gelu", "ViT-tiny.json", hub_config(spec, False)["model_cfg"]),
                ("quick_gelu", "ViT-tiny-quickgelu.json", hub_config(spec, True)["model_cfg"])]
    return [("gelu", "open_clip_config.json", hub_config(spec, False)),
            ("quick_gelu", "open_clip_config-quickgelu.json", hub_config(spec, True))]


def text_ids(spec, g):
    t = spec["model_cfg"]["text_cfg"]
    if t["vocab_size"] == 49408:
        return open_clip.tokenize(prompts(), context_length=t["context_length"])
    # A small vocabulary: start token, random tokens, end token = the largest id (argmax pooling).
    n, ctx, vocab = 4, t["context_length"], t["vocab_size"]
    ids = torch.zeros(n, ctx, dtype=torch.long)
    for i in range(n):
        length = min(3 + i * 3, ctx)
        ids[i, 0] = vocab - 2
        ids[i, 1:length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=g)
        ids[i, length - 1] = vocab - 1
    return ids


def probs(logit_scale, img, txt):
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (logit_scale.exp() * img @ txt.t()).softmax(dim=-1)


def make_variant(name, spec, seed):
    d = FIX / name
    d.mkdir(parents=True, exist_ok=True)
    mc = spec["model_cfg"]
    base = open_clip.model.CLIP(**mc).eval()
    randomise(base, seed)
    sd = {k: v.detach().clone() for k, v in base.state_dict().items() if k != "attn_mask"}
    g = torch.Generator().manual_seed(seed + 1)
    ids = text_ids(spec, g)
    compact = spec["model_cfg"]["text_cfg"]["vocab_size"] == 49408
    if compact:
        # Only the rows the prompts use (and open_clip's pad id 0) are kept, the rest zero: what
        # open_clip runs with and what the test rebuilds.
        rows = torch.unique(torch.cat([ids.flatten(), torch.tensor([0, 49406, 49407])]))
        keep = torch.zeros(sd["token_embedding.weight"].shape[0], dtype=torch.bool)
        keep[rows] = True
        sd["token_embedding.weight"][~keep] = 0
        stored = {k: v.half() for k, v in sd.items() if k != "token_embedding.weight"}
        stored["token_rows"] = rows.to(torch.int64)
        stored["token_embedding_rows"] = sd["token_embedding.weight"][rows].half()
        save_file({k: v.contiguous() for k, v in stored.items()}, d / "weights.safetensors")
    else:
        torch.save({k: v.half() for k, v in sd.items()}, d / spec["checkpoint"])
    for _, fname, content in config_files(spec):
        (d / fname).write_text(json.dumps(content, indent=2))
    for act in ("gelu", "quick_gelu"):
        (d / f"config-{act}.json").write_text(json.dumps(transformers_config(mc, act), indent=2))

    v = mc["vision_cfg"]
    pixels = torch.randn(3, 3, v["image_size"], v["image_size"], generator=g)
    out = {"pixel_values": pixels, "input_ids": ids.to(torch.int64)}
    meta = {"labels": LABELS, "images": IMAGES, "prompts": prompts(), "differences": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # open_clip loads the model from the very files rvpt reads: its `local-dir:` reader.
        if compact:
            from safetensors.torch import save_file as sf
            sf({k: v.half().contiguous() for k, v in sd.items()}, tmp / spec["checkpoint"])
        else:
            (tmp / spec["checkpoint"]).write_bytes((d / spec["checkpoint"]).read_bytes())
        for act, _, _ in config_files(spec):
            (tmp / "open_clip_config.json").write_text(json.dumps(hub_config(spec, act == "quick_gelu")))
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp}")
            model = model.float().eval()
            want = torch.nn.GELU if act == "gelu" else open_clip.model.QuickGELU
            acts = {type(m.mlp.gelu) for m in model.visual.transformer.resblocks}
            assert acts == {want}, (act, acts)
            hf = CLIPModel(CLIPConfig(**transformers_config(mc, act)))
            hf_sd = openai_to_hf({k: val.float() for k, val in sd.items()})
            missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
            assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
            hf = hf.eval()
            with torch.no_grad():
                oi, ot = model.encode_image(pixels), model.encode_text(ids)
                hi = hf.get_image_features(pixel_values=pixels)
                ht = hf.get_text_features(input_ids=ids)
                hi = getattr(hi, "pooler_output", hi)
                ht = getattr(ht, "pooler_output", ht)
                out[f"{act}.open_clip.image_embeds"] = oi
                out[f"{act}.open_clip.text_embeds"] = ot
                out[f"{act}.open_clip.probs"] = probs(model.logit_scale, oi, ot)
                out[f"{act}.transformers.image_embeds"] = hi
                out[f"{act}.transformers.text_embeds"] = ht
                out[f"{act}.transformers.probs"] = probs(hf.logit_scale, hi, ht)
                e = max((oi - hi).abs().max().item(), (ot - ht).abs().max().item())
                print(f"{name} {act}: open_clip vs transformers, max abs embedding diff {e:.2e}")
                assert e < 1e-4
                if spec["zero_shot"]:
                    imgs = torch.stack([preprocess(Image.open(FIX / "images" / n)) for n in IMAGES])
                    out["open_clip.zero_shot_pixels"] = imgs  # the same under either activation
                    out[f"{act}.open_clip.zero_shot_probs"] = probs(
                        model.logit_scale, model.encode_image(imgs), model.encode_text(ids))
        # The other activation must move what the tests check (embeddings; zero-shot
        # probabilities) 100x beyond their tolerance (1e-4), or they could not tell them apart.
        # `probs` of random ids saturate near one-hot: recorded, not required to differ.
        checked = ("image_embeds", "text_embeds") + (("zero_shot_probs",) if spec["zero_shot"] else ())
        for key in checked + ("probs",):
            diff = (out[f"gelu.open_clip.{key}"] - out[f"quick_gelu.open_clip.{key}"]).abs().max().item()
            meta["differences"][key] = diff
            print(f"{name}: GELU vs QuickGELU {key} max abs diff {diff:.2e}")
            assert key not in checked or diff > 1e-2, (name, key, diff)
    save_file({k: v.contiguous() for k, v in out.items()}, d / "expected.safetensors")
    (d / "expected.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    torch.manual_seed(0)
    np.random.seed(0)
    for i, (name, spec) in enumerate(VARIANTS.items()):
        make_variant(name, spec, 100 + i)
    versions = json.loads((FIX / "versions.json").read_text()) if (FIX / "versions.json").exists() else {}
    print("versions:", {"torch": torch.__version__, "transformers": transformers.__version__,
                        "open_clip": open_clip.__version__, "python": sys.version.split()[0]}, "(recorded:", versions, ")")
