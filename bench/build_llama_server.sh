#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the sources vendored in the installed
# llama-cpp-python release, into bench/.build/ (git-ignored). Idempotent: a second run
# does nothing once the binary exists. CPU only, Release, no curl.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
build="$here/.build"
binary="$build/llama-server"
jobs="${JOBS:-$(nproc)}"

if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi

version="$("$python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
mkdir -p "$build/sdist"
sdist="$(ls "$build"/sdist/llama_cpp_python-"$version".tar.gz 2>/dev/null || true)"
if [[ -z "$sdist" ]]; then
    # pip uses whatever index the environment already configures.
    "$python" -m pip download --quiet --no-binary :all: --no-deps \
        "llama-cpp-python==$version" -d "$build/sdist"
    sdist="$(ls "$build"/sdist/llama_cpp_python-"$version".tar.gz)"
fi

src="$build/src"
rm -rf "$src"
mkdir -p "$src"
tar -xzf "$sdist" -C "$src" --strip-components=1 "llama_cpp_python-$version/vendor/llama.cpp"
cpp="$src/vendor/llama.cpp"

cmake -S "$cpp" -B "$build/cmake" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF
cmake --build "$build/cmake" --target llama-server -j "$jobs"

cp "$build/cmake/bin/llama-server" "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "$binary"
