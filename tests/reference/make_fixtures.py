"""Generates the golden fixtures of rvpt's parity tests with PyTorch + transformers (+ open_clip).

Run by hand, from the repository root, in a venv outside the repo:

    python -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers pillow open_clip_torch scikit-image safetensors
    /tmp/ref/bin/python tests/reference/make_fixtures.py

Everything is seeded; rerunning rewrites identical fixtures (up to library versions, recorded in
tests/fixtures/versions.json). Outputs:

  assets/clip-tokenizer.json          CLIP BPE tokenizer built from open_clip's OpenAI vocabulary
  tests/fixtures/tiny/                tiny random CLIPModel, transformers layout (f16) + config.json
  tests/fixtures/tiny-openai/         the same weights in OpenAI layout: model.pt = {"state_dict": {"module." + name}}
  tests/fixtures/parity.safetensors   inputs and expected outputs of the tiny model (f32)
  tests/fixtures/tokens.json          ~20 captions and their ids (77, padded with <|endoftext|>)
  tests/fixtures/images/ + preprocess.safetensors   real photos and CLIPImageProcessor's output
  tests/fixtures/vit_b32_params.json  parameter counts transformers reports for ViT-B/32
"""

import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
torch.manual_seed(0)
np.random.seed(0)


# ---------------------------------------------------------------- tokenizer
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tokenizer():
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    # transformers 5 builds the fast tokenizer straight from the vocabulary and merges.
    tok = CLIPTokenizerFast(
        vocab={t: i for i, t in enumerate(vocab)},
        merges=[tuple(m) for m in merges],
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tok.model_max_length = 77
    (ROOT / "assets").mkdir(exist_ok=True)
    tok.backend_tokenizer.save(str(ROOT / "assets" / "clip-tokenizer.json"))
    assert len(tok) == 49408, len(tok)
    return tok


CAPTIONS = [
    "a photo of a cat.",
    "a photo of a dog.",
    "A Photo Of A GOLDEN RETRIEVER!",
    "an aerial view of a city at night, with lights",
    "two  spaces   and\ttabs\nnewline",
    "don't we'll they're it's I'm you've she'd",
    "numbers 1234567 and 3.14159",
    "café naïve résumé façade",
    "emoji 🐱🐶 and symbols @#$%^&*()",
    "a photo of a tench.",
    "a photo of a chain saw.",
    "a photo of a French horn.",
    "hyphen-ated words and under_scores",
    "<|startoftext|> literal special tokens <|endoftext|>",
    "",
    "a",
    "x" * 100,
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),
    "中文字符 and 日本語",
    "a photo of a {}.",
]


def make_tokens(tok):
    import open_clip

    enc = tok(CAPTIONS, padding="max_length", max_length=77, truncation=True)
    ids = enc["input_ids"]
    # Cross-check with open_clip's port of OpenAI's own tokenizer (pads with 0 instead of EOT).
    ref = open_clip.tokenize(CAPTIONS).tolist()
    agree = 0
    for a, b in zip(ids, ref):
        n = b.index(49407) + 1 if 49407 in b else 77
        agree += a[:n] == b[:n]
    shared = ROOT.parent / "shared" / "clip" / "tokenizer.json"
    same_as_shared = None
    if shared.exists():  # only a cross-check: nothing from ../shared is written into the repo
        from tokenizers import Tokenizer

        s = Tokenizer.from_file(str(shared))
        same_as_shared = all(s.encode(c).ids[:76] == tok(c, truncation=True, max_length=77)["input_ids"][:76] for c in CAPTIONS)
    print(f"tokens: {agree}/{len(CAPTIONS)} captions equal open_clip's tokenizer; equal to shared hub tokenizer: {same_as_shared}")
    (FIX / "tokens.json").write_text(json.dumps({"captions": CAPTIONS, "input_ids": ids, "open_clip_agree": agree}, ensure_ascii=False, indent=0))
    return ids


# ---------------------------------------------------------------- tiny model
TINY = dict(
    projection_dim=16,
    logit_scale_init_value=2.6592,
    vision_config=dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=12,
                       image_size=32, patch_size=8, hidden_act="quick_gelu"),
    text_config=dict(hidden_size=16, intermediate_size=64, num_attention_heads=2, num_hidden_layers=3,
                     max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", eos_token_id=2),
)


def hf_to_openai(sd):
    """transformers names → OpenAI/open_clip names (the inverse of src/model/openai.rs)."""
    out = {}
    for tower, prefix in (("vision_model", "visual."), ("text_model", "")):
        layers = {k.split(".")[3] for k in sd if k.startswith(f"{tower}.encoder.layers.")}
        for i in sorted(layers, key=int):
            p = f"{tower}.encoder.layers.{i}."
            q = f"{prefix}transformer.resblocks.{i}."
            out[q + "attn.in_proj_weight"] = torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
            out[q + "attn.in_proj_bias"] = torch.cat([sd[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            for a, b in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                for s in ("weight", "bias"):
                    out[q + f"{b}.{s}"] = sd[p + f"{a}.{s}"]
    v = "vision_model."
    out["visual.conv1.weight"] = sd[v + "embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = sd[v + "embeddings.class_embedding"]
    out["visual.positional_embedding"] = sd[v + "embeddings.position_embedding.weight"]
    for a, b in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for s in ("weight", "bias"):
            out[f"visual.{b}.{s}"] = sd[v + f"{a}.{s}"]
    out["visual.proj"] = sd["visual_projection.weight"].t().contiguous()
    t = "text_model."
    out["token_embedding.weight"] = sd[t + "embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[t + "embeddings.position_embedding.weight"]
    for s in ("weight", "bias"):
        out[f"ln_final.{s}"] = sd[t + f"final_layer_norm.{s}"]
    out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    out["logit_scale"] = sd["logit_scale"]
    return {k: v.contiguous() for k, v in out.items()}


def open_clip_model(sd32):
    """The OpenAI-layout weights in open_clip's own CLIP: an independent check of the mapping."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    v, t = TINY["vision_config"], TINY["text_config"]
    m = CLIP(
        embed_dim=TINY["projection_dim"],
        vision_cfg=CLIPVisionCfg(layers=v["num_hidden_layers"], width=v["hidden_size"],
                                 head_width=v["hidden_size"] // v["num_attention_heads"],
                                 mlp_ratio=v["intermediate_size"] / v["hidden_size"],
                                 patch_size=v["patch_size"], image_size=v["image_size"]),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=t["vocab_size"], width=t["hidden_size"],
                             heads=t["num_attention_heads"], layers=t["num_hidden_layers"],
                             mlp_ratio=t["intermediate_size"] / t["hidden_size"]),
        quick_gelu=True,
    )
    missing, unexpected = m.load_state_dict(sd32, strict=False)
    assert not unexpected and all("attn_mask" in k for k in missing), (missing, unexpected)
    return m.eval()


def make_model(input_ids):
    cfg = CLIPConfig(**TINY)
    model = CLIPModel(cfg)
    # Round every parameter to f16 so the f16 files hold exactly what the f32 reference computes with.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
        model.logit_scale.fill_(float(np.log(1 / 0.07)))
    d = FIX / "tiny"
    d.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(d, safe_serialization=True)
    model.float()
    model = CLIPModel.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}

    oa = hf_to_openai(sd)
    od = FIX / "tiny-openai"
    od.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"module." + k: v.half() for k, v in oa.items()}, "epoch": 0}, od / "model.pt")
    (od / "config.json").write_text((d / "config.json").read_text())

    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(4, 3, 32, 32, generator=g)
    ids = torch.tensor(input_ids, dtype=torch.long)
    with torch.no_grad():
        vis = model.vision_model(pixel_values=pixels, output_hidden_states=True)
        txt = model.text_model(input_ids=ids, output_hidden_states=True)
        out = model(input_ids=ids, pixel_values=pixels)
        image_embeds = model.visual_projection(vis.pooler_output)
        text_embeds = model.text_projection(txt.pooler_output)
        oc = open_clip_model({k: v.float() for k, v in oa.items()})
        oc_img = oc.encode_image(pixels)
        oc_txt = oc.encode_text(ids)
    e1 = (oc_img - image_embeds).abs().max().item()
    e2 = (oc_txt - text_embeds).abs().max().item()
    print(f"open_clip on the OpenAI-layout weights vs transformers: image {e1:.2e}, text {e2:.2e}")
    assert e1 < 1e-4 and e2 < 1e-4
    tensors = {
        "pixel_values": pixels,
        "input_ids": ids,
        "image_features": vis.pooler_output,
        "image_embeds": image_embeds,
        "text_features": txt.pooler_output,
        "text_embeds": text_embeds,
        "text_last_hidden_state": txt.last_hidden_state,
        "logits_per_image": out.logits_per_image,
        "vision_hidden_states": torch.stack(vis.hidden_states),
        "text_hidden_states": torch.stack(txt.hidden_states),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, FIX / "parity.safetensors")


# ---------------------------------------------------------------- preprocessing
def make_images():
    from skimage import data

    d = FIX / "images"
    d.mkdir(parents=True, exist_ok=True)
    # Real photos, shrunk to keep the fixtures small, each in one of the formats we decode.
    Image.fromarray(data.chelsea()).save(d / "chelsea.jpg", quality=90)                       # 451x300 JPEG
    Image.fromarray(data.coffee()).resize((300, 200), Image.BICUBIC).save(d / "coffee.png")   # 300x200 PNG
    Image.fromarray(data.astronaut()).resize((256, 256), Image.BICUBIC).save(d / "astronaut.webp", lossless=True)
    Image.fromarray(data.camera()).resize((240, 320), Image.BICUBIC).save(d / "camera.png")   # greyscale, portrait
    rgba = np.dstack([data.rocket()[:, :, :3], np.full(data.rocket().shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).resize((214, 160), Image.BICUBIC).save(d / "rocket-rgba.png")      # alpha, upscaled
    names = ["chelsea.jpg", "coffee.png", "astronaut.webp", "camera.png", "rocket-rgba.png"]
    proc = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                              resample=3, do_center_crop=True, do_convert_rgb=True)
    images = [Image.open(d / n) for n in names]
    pv = proc(images=images, return_tensors="pt")["pixel_values"]
    mean = torch.tensor(proc.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(proc.image_std).view(1, 3, 1, 1)
    unit = pv * std + mean  # back to [0, 1]: the resized and cropped RGB image / 255
    rgb = (unit * 255).round().clamp(0, 255).to(torch.uint8)  # PIL's 8-bit resize + crop, exactly
    assert (rgb.float() / 255 - unit).abs().max() < 1e-5
    save_file({"rgb": rgb.contiguous(), "pixel_values": pv.half().contiguous()}, FIX / "preprocess.safetensors")
    (FIX / "images" / "order.json").write_text(json.dumps(names))


# ---------------------------------------------------------------- ViT-B/32 parameter counts
def make_counts():
    with torch.device("meta"):
        m = CLIPModel(CLIPConfig())  # transformers' defaults are ViT-B/32
    count = lambda mod: sum(p.numel() for p in mod.parameters())
    counts = {"total": count(m), "vision": count(m.vision_model), "text": count(m.text_model)}
    print("ViT-B/32 parameters:", counts)
    (FIX / "vit_b32_params.json").write_text(json.dumps(counts))


if __name__ == "__main__":
    FIX.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    ids = make_tokens(tok)
    make_model(ids)
    make_images()
    make_counts()
    import open_clip
    import PIL
    (FIX / "versions.json").write_text(json.dumps({
        "torch": torch.__version__, "transformers": transformers.__version__,
        "open_clip": open_clip.__version__, "pillow": PIL.__version__, "python": sys.version.split()[0]}))
    print("fixtures written to", FIX)
