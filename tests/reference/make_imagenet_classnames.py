"""Writes assets/imagenet_clip_classnames.tsv: ImageNet's 1000 synsets in class-index order
(timm's `imagenet_synsets.txt`) with the class names OpenAI's CLIP zero-shot evaluation uses
(open_clip's `IMAGENET_CLASSNAMES`), one `synset<TAB>name` per line.

Run by hand, from the repository root, with timm and open_clip_torch installed:

    /tmp/torchenv/bin/python tests/reference/make_imagenet_classnames.py
"""

import importlib.resources

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

synsets = (importlib.resources.files("timm") / "data/_info/imagenet_synsets.txt").read_text().split()
assert len(synsets) == len(IMAGENET_CLASSNAMES) == 1000
assert synsets == sorted(synsets), "class index order is the sorted synset order"
with open("assets/imagenet_clip_classnames.tsv", "w") as f:
    for s, n in zip(synsets, IMAGENET_CLASSNAMES):
        assert "\t" not in n
        f.write(f"{s}\t{n}\n")
print(synsets[0], IMAGENET_CLASSNAMES[0], synsets[-1], IMAGENET_CLASSNAMES[-1])
