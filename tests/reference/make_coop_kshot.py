"""CoOp's k-shot sampling (Dassl's DatasetBase.generate_fewshot_dataset after CoOp's
set_random_seed), for tests/data.rs. Run by hand with any Python 3:

    python3 tests/reference/make_coop_kshot.py   # writes tests/fixtures/coop_kshot.json

Items are the indices of a data source in its order (a CoOp split file's `train` list); the
tracker groups them by label in order of first appearance, and each class with at least k items
gets random.sample(items, k), else all of them (CoOp calls it without repeat).
"""
import json
import random
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "coop_kshot.json"


def generate_fewshot(labels, k, seed):
    random.seed(seed)
    tracker = defaultdict(list)
    for i, label in enumerate(labels):
        tracker[label].append(i)
    picked = []
    for _, items in tracker.items():
        picked.extend(random.sample(items, k) if len(items) >= k else items)
    return picked


cases = []
gen = random.Random(2024)
for n_classes, per_class, k, seed in [
    (5, 40, 16, 1),     # 40 items: the pool path of random.sample
    (5, 200, 16, 2),    # 200 items: the set path (above 21 + 4**3)
    (3, 10, 4, 3),      # k <= 5
    (4, 12, 16, 1),     # fewer than k: all of them
    (37, 100, 1, 1),    # OxfordPets-sized, 1 shot
    (6, 150, 8, 123456789012),  # a seed above 2**32
]:
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    gen.shuffle(labels)  # classes interleaved, first appearance not in label order
    cases.append({"labels": labels, "k": k, "seed": seed, "picked": generate_fewshot(labels, k, seed)})
OUT.write_text(json.dumps(cases))
print(f"{len(cases)} cases -> {OUT}")
