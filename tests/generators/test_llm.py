"""The LLM factory: sampling mapped per backend, the transformers backend on a tiny model, the
embedded default converted once and reused, and `charforge models`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.factories import run_cli

from charforge.generators import llm as llm_module
from charforge.generators.chat import GenerationRun, model_card
from charforge.generators.embedded import EmbeddedModelError, converted_dir, gguf_path, lookup
from charforge.generators.llm import (
    BackendUnavailable,
    availability,
    build_llm,
    generation_attention,
    generation_dtype,
    generation_kwargs,
)
from charforge.params import ParamsError, load_section
from charforge.schemas.params import GenerationConfig, ModelRole, ModelsConfig, Sampling

CHAT = [[{"role": "user", "content": "Say hello."}], [{"role": "user", "content": "Name a colour."}]]


def test_sampling_is_mapped_per_backend() -> None:
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 12, "repetition_penalty": 1.05}
    assert generation_kwargs(ModelRole(model="m", sampling=sampling)) == {
        "max_new_tokens": 12,
        "do_sample": True,
        "repetition_penalty": 1.05,
        "top_k": 0,
        "temperature": 0.7,
        "top_p": 0.9,
    }
    greedy = generation_kwargs(ModelRole(model="m", sampling={"temperature": 0}))
    assert greedy["do_sample"] is False and "temperature" not in greedy
    assert (
        generation_kwargs(ModelRole(backend="vllm", model="m", sampling=sampling))["repetition_penalty"]
        == 1.05
    )
    openai = ModelRole(backend="openai", model="m", base_url="http://127.0.0.1:1/v1", sampling=sampling)
    assert generation_kwargs(openai) == {
        "max_new_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "extra_body": {"repetition_penalty": 1.05},  # vLLM / llama.cpp servers read it from the body
    }


def test_openai_backend_needs_a_base_url_and_no_secrets_in_params() -> None:
    with pytest.raises(ValueError, match="needs base_url"):
        ModelRole(backend="openai", model="m")
    with pytest.raises(ValueError, match="must not hold secrets"):
        ModelRole(backend="openai", model="m", base_url="http://127.0.0.1:1/v1", extra={"api_key": "sk-x"})


def test_remote_openai_server_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARFORGE_TEST_KEY", raising=False)
    role = ModelRole(
        backend="openai", model="m", base_url="https://api.example.com/v1", api_key_env="CHARFORGE_TEST_KEY"
    )
    with pytest.raises(BackendUnavailable, match=r"needs an API key in \$CHARFORGE_TEST_KEY"):
        build_llm(role)
    penalised = role.model_copy(update={"sampling": Sampling(repetition_penalty=1.2)})
    assert generation_kwargs(penalised)["extra_body"] == {"repetition_penalty": 1.2}


def test_transformers_backend_on_tiny_model(tiny_model: Path) -> None:
    role = ModelRole(model=str(tiny_model), sampling={"temperature": 1.0, "max_new_tokens": 8})
    llm = build_llm(role, seed=3)
    llm.load()
    first = llm.generate_outputs(CHAT, **llm.generation_kwargs)
    again = llm.generate_outputs(CHAT, **llm.generation_kwargs)
    assert [len(out["generations"]) for out in first] == [1, 1]
    assert all(isinstance(text, str) for out in first for text in out["generations"])
    assert first == again  # the same seed and batch sample the same text
    other_seed = build_llm(role, seed=4)
    other_seed.load()
    assert other_seed.generate_outputs(CHAT, **other_seed.generation_kwargs) != first


@pytest.mark.parametrize("native_bf16", [True, False])
def test_generation_dtype_is_bf16_only_on_a_cpu_with_native_bf16(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Path, native_bf16: bool
) -> None:
    """`auto` generates in bf16 where the CPU has it natively and in fp32 elsewhere; the training and
    judging `dtype` is untouched; the resolved value reaches the backend, the provenance and the manifest's
    model card."""
    import torch

    monkeypatch.setattr(llm_module, "cpu_has_native_bf16", lambda: native_bf16)
    role = ModelRole(model=str(tiny_model), dtype="float32", sampling={"temperature": 0, "max_new_tokens": 4})
    expected = "bfloat16" if native_bf16 else "float32"
    assert generation_dtype(role) == expected
    assert role.dtype == "float32"
    llm = build_llm(role)
    llm.load()
    assert llm._pipeline.model.dtype == getattr(torch, expected)
    assert llm.generate_outputs(CHAT[:1], **llm.generation_kwargs)[0]["generations"][0] is not None
    run = GenerationRun("v", 0, generation=GenerationConfig())
    assert run.recorded_as("g", {"teacher": role}).provenance["generation_dtype"] == {"teacher": expected}
    assert model_card(role)["generation_dtype"] == expected


def test_cpu_generation_runs_eager_attention_unless_the_role_names_one(tiny_model: Path) -> None:
    """On CPU the transformers backend decodes with eager attention (SDPA is slower there on left-padded
    batches); the choice reaches the loaded model and the model card; a role's own
    ``extra.model_kwargs.attn_implementation`` wins; servers decide their own."""
    role = ModelRole(model=str(tiny_model), sampling={"temperature": 0, "max_new_tokens": 4})
    assert generation_attention(role) == "eager"
    llm = build_llm(role)
    llm.load()
    assert llm._pipeline.model.config._attn_implementation == "eager"
    assert model_card(role)["generation_attention"] == "eager"
    named = role.model_copy(update={"extra": {"model_kwargs": {"attn_implementation": "sdpa"}}})
    assert generation_attention(named) == "sdpa"
    llm = build_llm(named)
    llm.load()
    assert llm._pipeline.model.config._attn_implementation == "sdpa"
    remote = ModelRole(backend="openai", model="m", base_url="http://127.0.0.1:8000/v1")
    assert generation_attention(remote) is None and "generation_attention" not in model_card(remote)


def test_generation_dtype_set_explicitly_or_decided_by_a_server() -> None:
    assert generation_dtype(ModelRole(model="m", generation_dtype="float32")) == "float32"
    assert generation_dtype(ModelRole(backend="vllm", model="m", generation_dtype="bfloat16")) == "bfloat16"
    remote = ModelRole(backend="openai", model="m", base_url="http://127.0.0.1:8000/v1")
    assert generation_dtype(remote) is None
    assert "generation_dtype" not in model_card(remote)


def test_unknown_embedded_model_is_a_clear_error() -> None:
    with pytest.raises(EmbeddedModelError, match="unknown embedded model 'nope'"):
        lookup("embedded:nope")


def test_embedded_model_converts_once_and_reloads_fast(tmp_path: Path) -> None:
    model = "embedded:smollm2-135m-instruct"
    assert gguf_path(model).stat().st_size > 50_000_000
    folder = converted_dir(model, tmp_path)
    written = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert converted_dir(model, tmp_path) == folder
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == written  # reused, not redone
    assert len(list((tmp_path / "embedded").glob("smollm2-135m-instruct-*"))) == 1
    assert folder.name.startswith("smollm2-135m-instruct-")
    assert json.loads((folder / "charforge-source.json").read_text())["licence"] == "Apache-2.0"
    role = ModelRole(model=model, sampling={"temperature": 0, "max_new_tokens": 12})
    llm = build_llm(role, cache=tmp_path)
    llm.load()
    (output,) = llm.generate_outputs(CHAT[:1], **llm.generation_kwargs)
    assert output["generations"][0].strip()  # an instruct model answers something
    available, detail = availability(role, tmp_path)
    assert available and str(folder) in detail


def test_availability_reports_missing_models(tmp_path: Path) -> None:
    available, detail = availability(ModelRole(model=str(tmp_path / "missing")))
    assert not available and "never downloads" in detail
    key_env = "CHARFORGE_TEST_UNSET_KEY"  # a remote server is available once its key is set
    remote = ModelRole(
        backend="openai", model="gpt", base_url="https://api.example.com/v1", api_key_env=key_env
    )
    available, detail = availability(remote)
    assert not available and f"needs an API key in ${key_env}" in detail


def test_params_errors_are_located(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("models:\n  student:\n    model: m\n    backend: tpu\n  teacher: {model: m}\n")
    with pytest.raises(ParamsError) as caught:
        load_section(ModelsConfig, "models", params)
    found = [str(problem) for problem in caught.value.problems]
    assert f"{params}:4: models.student.backend: Input should be" in found[0]
    assert any(p == f"{params}:2: models.judge: required field is missing" for p in found)


def test_models_command(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "models:\n"
        "  student: {model: embedded:smollm2-135m-instruct}\n"
        f"  teacher: {{model: {tmp_path / 'nowhere'}}}\n"
        "  judge: {backend: openai, model: judge, base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    result = run_cli("models", "--params", params, "--json")
    assert result.returncode == 1  # the teacher is not available
    rows = {row["role"]: row for row in json.loads(result.stdout)}
    assert rows["student"]["available"] and not rows["teacher"]["available"]
    assert rows["judge"]["detail"] == "local server at http://127.0.0.1:9/v1 (not contacted)"
