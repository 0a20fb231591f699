#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, in under 8 minutes, everything gpunn says
# about its GPU path, written to the GPU sections of benchmarks/RESULTS.md:
#
#   1. pytest -m gpu                       the gpu-marked tests (CuPy beside NumPy)
#   2. gpu_check.py parity                 every CuPy kernel (conv_pool too) and one training
#                                          epoch vs the CPU
#   3. gpu_check.py fused                  784-30-10, mini-batch 10: s/epoch of the fused step
#                                          (goal <= 0.1 s on an H100), beside the CPU's
#   4. gpu_check.py train                  gpunn train --device cuda (chapter 1, 30 epochs)
#   5. bench_convnet.py --device cuda      chapter 6's conv net beside PyTorch CUDA
#   6. bench_imagenet.py --device cuda     alexnet at 224x224 beside PyTorch CUDA
#
# Each step has its own time limit (with the GPU probe they add up to 455 s); one that fails or
# runs out of time is marked so in the "GPU check" section and the rest still run. Exit: 0 when
# every step passed, 1 when one did not, 2 for a bad argument, 3 (one line) without a GPU,
# 4 when $PYTHON cannot run gpunn at all.
#
#   bash benchmarks/gpu_check.sh [--data-dir DIR]     (DIR holds MNIST; default $GPUNN_DATA,
#                                                      else ../shared/data beside the checkout)
# The Python it runs is $PYTHON (default: python), with gpunn[cuda12] (and torch) installed.
set -uo pipefail

usage="usage: bash benchmarks/gpu_check.sh [--data-dir DIR]"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${GPUNN_DATA:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) [ $# -ge 2 ] || { echo "gpu_check: --data-dir needs a directory; $usage" >&2; exit 2; }
                    data_dir="$2"; shift 2 ;;
        --data-dir=*) data_dir="${1#*=}"; shift ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1'; $usage" >&2; exit 2 ;;
    esac
done
if [ -z "$data_dir" ] && [ -d "$root/../shared/data" ]; then
    data_dir="$(cd "$root/../shared/data" && pwd)"
fi
if [ -n "$data_dir" ] && [ ! -e "$data_dir" ]; then
    echo "gpu_check: --data-dir $data_dir does not exist; give the directory that holds MNIST" >&2
    exit 2
fi
python="${PYTHON:-python}"
cd "$root" || exit 2

# No GPU: one line (from gpu_check.py require) and exit 3, before anything else starts.
probe="$(timeout 25 "$python" benchmarks/gpu_check.py require 2>&1)"
case $? in
    0) echo "$probe" ;;
    3) echo "$probe" | tail -n 1 >&2; exit 3 ;;
    124) echo "gpu_check: the GPU probe took over 25 s (CuPy's first compile?); run it again" >&2
         exit 3 ;;
    *) echo "gpu_check: $python could not run the GPU probe ($(echo "$probe" | tail -n 1));" \
            "set PYTHON to the interpreter that has gpunn[cuda12] installed" >&2
       exit 4 ;;
esac

data_args=()
[ -n "$data_dir" ] && data_args=(--data-dir "$data_dir")
summary=()
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, record ok/failed/timed out
    local name="$1" limit="$2" start status
    shift 2
    echo "== $name (limit ${limit} s)"
    start=$(date +%s)
    timeout --kill-after=5 "$limit" "$@"
    case $? in
        0) status=ok ;;
        124|137) status="timed out after ${limit} s" ;;
        *) status=failed ;;
    esac
    summary+=("$name|$status|$(( $(date +%s) - start ))")
    echo "== $name: $status"
}

step "pytest -m gpu" 120 "$python" -m pytest -q -m gpu -p no:cacheprovider
step "parity: kernels and one epoch" 75 "$python" benchmarks/gpu_check.py parity "${data_args[@]}"
step "fused dense step, 784-30-10" 45 "$python" benchmarks/gpu_check.py fused "${data_args[@]}"
step "gpunn train --device cuda, chapter 1" 60 \
    "$python" benchmarks/gpu_check.py train "${data_args[@]}"
step "chapter 6 conv net vs PyTorch CUDA" 70 \
    "$python" benchmarks/bench_convnet.py --device cuda --images 2000 --repeat 2 "${data_args[@]}"
step "alexnet 224 vs PyTorch CUDA" 60 \
    "$python" benchmarks/bench_imagenet.py --device cuda --arch alexnet --batch-size 128 \
    --steps 3 --warmup 2 --repeat 2

"$python" benchmarks/gpu_check.py summary "${summary[@]}"
