"""The generation run every generator shares: the seed the models sample with, and the provenance its
rows record (key order included: it is the order the rows are written in). (Answering chats runs end
to end in tests/stages/test_corpus_stages.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from charforge import __version__
from charforge.generators.chat import GenerationRun
from charforge.generators.llm import generation_dtype
from charforge.schemas.params import GenerationConfig, ModelRole

TEACHER = ModelRole(model="teacher-model", sampling={"temperature": 0.5, "max_new_tokens": 64})
STUDENT = ModelRole(model="student-model")


def test_the_models_sample_with_the_generation_seed_plus_the_variants() -> None:
    run = GenerationRun("humor-d3-s2", 2, GenerationConfig(seed=5), Path("cache"))
    assert run.sampling_seed == 7
    assert replace(run, seed=run.seed + 1000).sampling_seed == 1007  # a control's second pass
    assert run.cache == Path("cache") and GenerationRun("v", 0, GenerationConfig()).cache is None


def test_provenance_records_each_role_and_the_variants_seed() -> None:
    run = GenerationRun("humor-d3-s2", 2, GenerationConfig(seed=5))
    recorded = run.recorded_as(
        "charforge.generators.distill",
        {"teacher": TEACHER, "student": STUDENT},
        {"student": "student + adapter"},
        constitution_sha256="0" * 64,
    )
    assert run.provenance == {}  # the run itself is unchanged (frozen)
    assert replace(recorded, provenance={}) == run  # the plumbing is the run's
    assert list(recorded.provenance.items()) == [
        ("generator", "charforge.generators.distill"),
        ("tool_version", __version__),
        ("models", {"teacher": "teacher-model", "student": "student + adapter"}),
        ("sampling", {"teacher": TEACHER.sampling.model_dump(), "student": STUDENT.sampling.model_dump()}),
        ("generation_dtype", {"teacher": generation_dtype(TEACHER), "student": generation_dtype(STUDENT)}),
        ("constitution_sha256", "0" * 64),
        ("seed", 2),
    ]
    bare = run.recorded_as("charforge.generators.em_data", {}).provenance
    assert bare == {
        "generator": "charforge.generators.em_data",
        "tool_version": __version__,
        "models": {},
        "sampling": {},
        "generation_dtype": {},
        "seed": 2,
    }
