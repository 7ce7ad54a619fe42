#!/bin/bash
# Device checks for rvpt's CUDA build, run by hand on a lent GPU machine (README, "CUDA build"):
# CPU-vs-CUDA parity of eval / pr / classify, the toy defence on the GPU in f32 and bf16, then the
# benchmarks beside PyTorch's (image encoder, RVPT step, the ImageNet-shape defence; f32 and bf16).
# Run from the project root as `bash benches/gpu_checks.sh`. Expects
# target/gpu/{rvpt,bench_rvpt,bench_vision,bench_defend}.xz; writes results under $OUT (default
# ./gpu-out). Figures: the `rvpt`, `torch` and `ratio` lines of the bench-*.txt files.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export OUT
B=target/gpu
for f in $B/*.xz; do xz -dkf "$f"; done
chmod +x $B/rvpt $B/bench_rvpt $B/bench_vision $B/bench_defend
LIB=$(dirname "$(find /opt /usr/local -name 'libcublas.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
export HF_HUB_OFFLINE=1
nvidia-smi -L
echo "cuda libs: $LIB"
$B/rvpt toy --out /tmp/toy-test --split test --per-class 100 > /dev/null || $B/rvpt toy --out /tmp/toy-test --per-class 100 > /dev/null
ls /tmp/toy-test | head -3
# Start-up: the first CUDA process on a fresh machine was slow (19.9 s against 3.5 s on the CPU).
# candle ships PTX that the driver compiles at first load and caches (~/.nv/ComputeCache): if the
# run with the cache disabled is as slow as the first, that JIT is the cost.
E="$B/rvpt eval --weights toy-badnet --data /tmp/toy-test --trigger badnet:fixed,size=4 --target heart --device cuda --json"
for i in 1 2; do /usr/bin/time -f "cuda eval, process $i: %e s" $E > /dev/null; done
CUDA_CACHE_DISABLE=1 /usr/bin/time -f "cuda eval, JIT cache disabled: %e s" $E > /dev/null
# Parity: the same evaluation on CPU and CUDA (counts must agree; PR values to ~1e-5).
for dev in cpu cuda; do
  /usr/bin/time -f "$dev eval %e s" $B/rvpt eval --weights toy-badnet --data /tmp/toy-test --trigger badnet:fixed,size=4 --target heart --device $dev --json > $OUT/eval-$dev.json
  $B/rvpt pr --weights toy-blended --images /tmp/toy-test --perturb noise:0.03,blur:3,flip,blended:fixed --layerwise --device $dev --json > $OUT/pr-$dev.json
  $B/rvpt eval --weights toy-badnet --data /tmp/toy-test --trigger badnet:fixed,size=4 --target heart --device $dev --dtype bf16 --json > $OUT/eval16-$dev.json
  $B/rvpt classify --weights toy-badnet --labels "circle,heart,square,star,triangle" --top-k 5 --device $dev --json $(ls -d /tmp/toy-test/*/ | head -5 | while read d; do ls $d*.png | head -2; done) > $OUT/classify-$dev.json
done
python3 - <<'PY'
import json, os
o = os.environ["OUT"]
for k in ["eval", "eval16", "pr", "classify"]:
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
# RVPT on the GPU: the toy defence (cache mode) end to end, in f32 then mixed-precision bf16.
# The first CUDA process also shows start-up cost: compare its time with the second's.
for dt in f32 bf16; do
  /usr/bin/time -f "defend cuda $dt %e s" $B/rvpt defend --device cuda --dtype $dt --cases badnet --augment none --out /tmp/defend-cuda-$dt > $OUT/defend-cuda-$dt.txt 2>&1; tail -9 $OUT/defend-cuda-$dt.txt
done
# Benchmarks beside PyTorch on the same device and dtype (PyTorch: autocast for bf16).
PY=${PYTHON:-python3}
for dt in f32 bf16; do
  $B/bench_vision --device cuda --dtype $dt --batch 256 --iters 20 --python $PY 2>&1 | tee $OUT/bench-vision-$dt.txt
  $B/bench_rvpt --device cuda --dtype $dt --iters 20 --python $PY 2>&1 | tee $OUT/bench-rvpt-$dt.txt
  $B/bench_defend --device cuda --dtype $dt --classes 1000 --shots 16 --timed-epochs 2 --images /tmp/imagenet-shape --python $PY 2>&1 | grep -v "^training: epoch" | tee $OUT/bench-defend-$dt.txt
done
