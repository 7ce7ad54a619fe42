#!/bin/bash
# Device checks for rvpt's CUDA build, run by hand on a lent GPU machine (README, "CUDA build"):
# CPU-vs-CUDA parity of eval / pr / classify, the toy defence on the GPU, and the RVPT step
# benchmark beside PyTorch's. Expects target/gpu/{rvpt,bench_rvpt}.xz; writes results under $OUT.
set -u
cd "$(dirname "$0")/../.."
B=target/gpu
for f in $B/*.xz; do xz -dkf "$f"; done
chmod +x $B/rvpt $B/bench_rvpt
LIB=$(dirname "$(find /opt /usr/local -name 'libcublas.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
export HF_HUB_OFFLINE=1
nvidia-smi -L
echo "cuda libs: $LIB"
$B/rvpt toy --out /tmp/toy-test --split test --per-class 100 > /dev/null || $B/rvpt toy --out /tmp/toy-test --per-class 100 > /dev/null
ls /tmp/toy-test | head -3
# Parity: the same evaluation on CPU and CUDA (counts must agree; PR values to ~1e-5).
for dev in cpu cuda; do
  /usr/bin/time -f "$dev eval %e s" $B/rvpt eval --weights toy-badnet --data /tmp/toy-test --trigger badnet:fixed,size=4 --target heart --device $dev --json > $OUT/eval-$dev.json
  $B/rvpt pr --weights toy-blended --images /tmp/toy-test --perturb noise:0.03,blur:3,flip,blended:fixed --layerwise --device $dev --json > $OUT/pr-$dev.json
  $B/rvpt classify --weights toy-badnet --labels "circle,heart,square,star,triangle" --top-k 5 --device $dev --json $(ls -d /tmp/toy-test/*/ | head -5 | while read d; do ls $d*.png | head -2; done) > $OUT/classify-$dev.json
done
python3 - <<'PY'
import json, os
o = os.environ["OUT"]
for k in ["eval", "pr", "classify"]:
    a = json.load(open(f"{o}/{k}-cpu.json")); b = json.load(open(f"{o}/{k}-cuda.json"))
    worst = [0.0]
    def walk(x, y):
        if isinstance(x, dict):
            for key in x:
                if key in ("weights", "device"): continue
                walk(x[key], y.get(key) if isinstance(y, dict) else None)
        elif isinstance(x, list):
            for u, v in zip(x, y): walk(u, v)
        elif isinstance(x, float) and isinstance(y, (int, float)):
            worst[0] = max(worst[0], abs(x - y))
    walk(a, b)
    print(f"{k}: max abs difference cpu vs cuda over all numbers = {worst[0]:.3g}")
e = json.load(open(f"{o}/eval-cuda.json"))["report"]
print("cuda eval:", e["clean_accuracy"]["hits"], e["attack_success_rate"]["hits"])
PY
# RVPT on the GPU: the toy defence (cache mode) end to end.
/usr/bin/time -f "defend cuda %e s" $B/rvpt defend --device cuda --cases badnet-hard --augment none --out /tmp/defend-cuda > $OUT/defend-cuda.txt 2>&1; tail -8 $OUT/defend-cuda.txt
# Benchmark: one RVPT step on ViT-B/32 shapes, batch 32, f32.
$B/bench_rvpt --device cuda --iters 20 2>&1 | tee $OUT/bench-rvpt-cuda.txt
python3 benches/rvpt_torch.py --device cuda --iters 20 2>&1 | tail -1 | tee $OUT/bench-torch-cuda.txt
