#!/usr/bin/env bash
# Builds .gpu-site/: the packages benchmarks/bench_gpu.py needs that the lent GPU machine lacks (open_clip_torch,
# ftfy, wcwidth, bitsandbytes, and jsonschema with its three dependencies), at the versions of
# requirements.lock, as manylinux wheels for that machine's Python 3.12, installed into one folder that travels
# with the working tree (the device tool's `carry`, at most 64 MiB) and goes first on PYTHONPATH there.
# The machine's own torch, transformers, peft, accelerate and timm are used as they are (its CUDA build of
# torch is the one that matches its driver). Run here, where the package index is reachable:
#     bash benchmarks/gpu_site.sh            # then on the GPU machine: PYTHONPATH=.gpu-site:src python3 ...
# Needs only pip; PYTHON picks the interpreter whose pip downloads (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

SITE=.gpu-site
LOCK=requirements.lock
PYTHON=${PYTHON:-python3}
PACKAGES=(open-clip-torch ftfy wcwidth bitsandbytes jsonschema referencing rpds-py jsonschema-specifications)
LIMIT_MIB=60 # the carry's 64 MiB is shared with the working tree itself

pins=()
for name in "${PACKAGES[@]}"; do
    pin=$(grep -i -m1 "^${name}==" "$LOCK" | cut -d' ' -f1) || true
    [ -n "$pin" ] || { echo "gpu_site.sh: $name is not pinned in $LOCK" >&2; exit 1; }
    pins+=("$pin")
done

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# the GPU machine: CPython 3.12, x86_64, glibc new enough for manylinux_2_28 (pip matches each N exactly)
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for n in 28 27 24 17; do platform+=(--platform "manylinux_2_${n}_x86_64"); done
platform+=(--platform manylinux2014_x86_64 --platform any)
"$PYTHON" -m pip download -q --no-deps "${platform[@]}" -d "$wheels" "${pins[@]}"

rm -rf "$SITE"
"$PYTHON" -m pip install -q --no-deps --no-index --no-compile --target "$SITE" "${platform[@]}" "$wheels"/*.whl

# bitsandbytes ships one library per CUDA major (11, 12, 13), ROCm and XPU: the machine's torch is cu130, so keep
# the CPU and CUDA 13 ones (43 MB -> ~7 MB) and drop the others from RECORD too
find "$SITE/bitsandbytes" -maxdepth 1 -name 'libbitsandbytes_*' \
    ! -name 'libbitsandbytes_cpu*' ! -name 'libbitsandbytes_cuda13*' -print -delete |
    sed 's|^|removed |'
record=$(echo "$SITE"/bitsandbytes-*.dist-info/RECORD)
grep -E -v '^bitsandbytes/libbitsandbytes_' "$record" >"$record.new" || true
grep -E '^bitsandbytes/libbitsandbytes_(cpu|cuda13)' "$record" >>"$record.new" || true
mv "$record.new" "$record"
find "$SITE" -name '__pycache__' -type d -prune -exec rm -rf {} +

size_mib=$(du -sm "$SITE" | cut -f1)
echo "$SITE: ${pins[*]}; ${size_mib} MiB"
if [ "$size_mib" -gt "$LIMIT_MIB" ]; then
    echo "gpu_site.sh: $SITE is ${size_mib} MiB, over the ${LIMIT_MIB} MiB that fit the device's 64 MiB carry" >&2
    exit 1
fi
