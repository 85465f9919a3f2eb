#!/bin/sh
# Put what ASTRA's cp312 wheel needs from CUDA 12 into .whl/cuda12 (git-ignored; carried to the GPU machine):
# libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel, and a cuFFT stand-in (cufft_stub.c).
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$root/.whl/cuda12"
gcc -shared -fPIC -O2 -o "$root/.whl/cuda12/libcufft.so.11" -Wl,-soname,libcufft.so.11 \
    -Wl,--version-script="$here/cufft_stub.map" "$here/cufft_stub.c"
tmp=$(mktemp -d)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp" "nvidia-cuda-runtime-cu12==12.9.79"
unzip -j -o "$tmp"/nvidia_cuda_runtime_cu12-*.whl 'nvidia/cuda_runtime/lib/libcudart.so.12' -d "$root/.whl/cuda12"
rm -rf "$tmp"
ls -l "$root/.whl/cuda12"
