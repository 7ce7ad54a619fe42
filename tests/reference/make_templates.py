"""Writes assets/openai_imagenet_templates.txt: OpenAI's 80 ImageNet prompt templates, one per
line with `{}` for the class name, taken from the PyPI package open_clip_torch (MIT).

    /tmp/ref/bin/python tests/reference/make_templates.py
"""
from pathlib import Path

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

out = Path(__file__).resolve().parents[2] / "assets" / "openai_imagenet_templates.txt"
lines = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
assert len(lines) == 80 and all(l.count("{}") == 1 for l in lines)
out.write_text("\n".join(lines) + "\n")
print(f"{len(lines)} templates -> {out}")
