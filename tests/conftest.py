"""Test-wide set-up: the offline environment (before anything imports huggingface libraries)."""

from __future__ import annotations

import os

# Tests never reach the network (docs/design.md §7).
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ[_name] = _value

import network_guard  # noqa: E402

network_guard.install()
