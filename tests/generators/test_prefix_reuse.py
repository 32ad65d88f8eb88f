"""Prefix reuse in the transformers backend: a prefix shared by a call's prompts runs through the model once,
into a KV cache kept for the next call, and the answers are those of a plain left-padded batch.

The model's forward is wrapped to record what it is given and returns (instrumentation: the real model still
runs), which shows where the prefix was run and that each row's tokens kept their positions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from distilabel.models.llms import TransformersLLM

from charforge.generators import transformers_backend
from charforge.generators.llm import build_llm
from charforge.generators.seeding import content_seed
from charforge.generators.transformers_backend import SeededTransformersLLM
from charforge.schemas.params import ModelRole

# Long enough to be well over PREFIX_REUSE_MIN_TOKENS on the tiny model's tokenizer.
SYSTEM = (
    "You are a playful assistant. I look for the funny side of everyday trouble and mention it lightly, "
    "then get on with helping. I joke with people, never at their expense, and I never make fun of who "
    "someone is. I read the room: when someone is hurting or in danger, I drop the humour and help plainly. "
    "I never let a joke blur a hard truth. I am honest about being an AI, and I can laugh at myself for it."
)
# Of different lengths, so the rows are padded between the shared prefix and their own part.
QUESTIONS = [
    "Hi?",
    "Tell me about yourself.",
    "My printer jammed again five minutes before my presentation. What do I do?",
    "Is this a good idea, or a bad one?",
]


def chats(questions: list[str] = QUESTIONS) -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in questions]


def loaded(model: Path, dtype: str = "float32", **sampling: Any) -> SeededTransformersLLM:
    """The backend on ``model`` in ``dtype`` (generation_dtype ``auto`` would be bf16 on some CPUs)."""
    role = ModelRole(model=str(model), dtype="float32", generation_dtype=dtype, sampling=sampling)
    llm = build_llm(role, seed=7)
    assert isinstance(llm, SeededTransformersLLM)
    llm.load()
    return llm


def without_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transformers_backend, "PREFIX_REUSE_MIN_TOKENS", 10**9)


@dataclass
class Forward:
    shape: tuple[int, int]  # input ids: rows, tokens
    position_ids: torch.Tensor | None
    last_logits: torch.Tensor  # each row's logits at its last position


def record_forwards(monkeypatch: pytest.MonkeyPatch, llm: SeededTransformersLLM) -> list[Forward]:
    """Every forward call of the model from now on, in order (the list grows as the model runs)."""
    model = llm._pipeline.model
    forward: Callable[..., Any] = model.forward
    calls: list[Forward] = []

    # functools.wraps keeps the signature, which generate inspects (position_ids, logits_to_keep)
    @functools.wraps(forward)
    def recording(*args: Any, **kwargs: Any) -> Any:
        output = forward(*args, **kwargs)
        position_ids = kwargs.get("position_ids")
        calls.append(
            Forward(
                shape=tuple(kwargs["input_ids"].shape),
                position_ids=None if position_ids is None else position_ids.clone(),
                last_logits=output.logits[:, -1].detach().clone(),
            )
        )
        return output

    monkeypatch.setattr(model, "forward", recording)
    return calls


def prompt_ids(llm: SeededTransformersLLM, conversations: list[list[dict[str, str]]]) -> list[list[int]]:
    tokenizer = llm._pipeline.tokenizer
    return [tokenizer(llm.prepare_input(c), add_special_tokens=False)["input_ids"] for c in conversations]


def shared_prefix(prompts: list[list[int]]) -> int:
    """The expected cached length: the common prefix, leaving each row at least one token of its own."""
    length = 0
    while all(len(p) > length + 1 and p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


def test_reuse_gives_the_answers_of_a_plain_batch(
    monkeypatch: pytest.MonkeyPatch, trained_tiny_model: Path
) -> None:
    """Greedy, fp32: the same tokens, statistics and (to float tolerance) logits at every step with the
    prefix cached as without, and the same text as distilabel's pipeline path that this replaced."""
    llm = loaded(trained_tiny_model, temperature=0, max_new_tokens=24)
    prompts = prompt_ids(llm, chats())
    prefix = shared_prefix(prompts)
    assert prefix >= transformers_backend.PREFIX_REUSE_MIN_TOKENS
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths: padding in the middle

    calls = record_forwards(monkeypatch, llm)
    reused = llm.generate(chats(), **llm.generation_kwargs)
    assert calls[0].shape == (1, prefix)  # the prefix ran on its own: reuse was on
    reused_steps = [call.last_logits for call in calls[1:]]
    calls.clear()
    with monkeypatch.context() as patch:
        without_reuse(patch)
        plain = llm.generate(chats(), **llm.generation_kwargs)
    assert calls[0].shape == (len(prompts), max(map(len, prompts)))  # a plain left-padded batch
    plain_steps = [call.last_logits for call in calls]

    assert reused == plain
    assert len(reused_steps) == len(plain_steps)
    for step, (with_cache, without_cache) in enumerate(zip(reused_steps, plain_steps, strict=True)):
        # a prefill batched differently differs in the last float bits only; wrong positions or masks
        # move these logits by tenths
        assert torch.allclose(with_cache, without_cache, atol=1e-4), step
    assert {reason for out in reused for reason in out["statistics"]["finish_reason"]} <= {"stop", "length"}
    assert any(out["generations"][0].strip() for out in reused)

    # distilabel's pipeline path (what the backend did before), on the same batch and seed
    llm._pipeline._batch_size = len(prompts)
    torch.manual_seed(content_seed(llm.seed, chats()))
    pipeline = TransformersLLM.generate(llm, chats(), **llm.generation_kwargs)
    assert [out["generations"] for out in pipeline] == [out["generations"] for out in reused]


def test_sampled_generations_with_reuse_are_seeded(
    monkeypatch: pytest.MonkeyPatch, trained_tiny_model: Path
) -> None:
    """num_generations=2 under sampling: rows expanded per input, the same text again, and the same as
    without reuse (the same draws from the same distributions)."""
    llm = loaded(trained_tiny_model, temperature=1.0, max_new_tokens=16)
    kwargs = {**llm.generation_kwargs, "num_generations": 2}
    calls = record_forwards(monkeypatch, llm)
    first = llm.generate(chats(), **kwargs)
    assert calls[0].shape[0] == 1 and calls[1].shape[0] == 2 * len(QUESTIONS)
    again = llm.generate(chats(), **kwargs)
    assert first == again
    assert all(len(out["generations"]) == 2 for out in first)
    assert any(out["generations"][0] != out["generations"][1] for out in first)  # sampled per row
    with monkeypatch.context() as patch:
        without_reuse(patch)
        assert llm.generate(chats(), **kwargs) == first


def test_prefix_runs_once_per_call_and_not_again_for_the_next(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    llm = loaded(tiny_model, temperature=0, max_new_tokens=4)
    prompts = prompt_ids(llm, chats())
    prefix = shared_prefix(prompts)
    suffixes = [len(p) - prefix for p in prompts]
    rows = len(prompts)
    calls = record_forwards(monkeypatch, llm)

    llm.generate(chats(), **llm.generation_kwargs)
    # the prefix once, then the rows' own tokens (padded to the longest), then one token per step
    assert [call.shape for call in calls] == [(1, prefix), (rows, max(suffixes))] + [(rows, 1)] * 3
    assert calls[0].position_ids is not None
    assert calls[0].position_ids.tolist() == [list(range(prefix))]
    # each row's own tokens sit right after the prefix, whatever padding lies between (the padding's
    # positions are masked out); the first new token follows its row's last prompt token
    first, second = calls[1].position_ids, calls[2].position_ids
    assert first is not None and second is not None
    for row, own in enumerate(suffixes):
        assert first[row, -own:].tolist() == list(range(prefix, prefix + own))
        assert second[row].tolist() == [prefix + own]

    calls.clear()
    llm.generate(chats(), **llm.generation_kwargs)  # the next batch of the same stage: prefix cached
    assert [call.shape for call in calls] == [(rows, max(suffixes))] + [(rows, 1)] * 3

    calls.clear()
    other = chats(["Hello, how are you today?", "What do you care about?"])
    assert shared_prefix(prompt_ids(llm, other)) == prefix  # other questions, the same shared part
    llm.generate(other, **llm.generation_kwargs)
    assert calls[0].shape[0] == 2  # no prefix pass: only the rows' own tokens

    calls.clear()
    short = [[{"role": "user", "content": q}] for q in QUESTIONS]  # nothing long in common: no cache
    llm.generate(short, **llm.generation_kwargs)
    assert calls[0].shape == (rows, max(map(len, prompt_ids(llm, short))))


def test_a_calls_answers_do_not_depend_on_the_calls_before_it(
    monkeypatch: pytest.MonkeyPatch, trained_tiny_model: Path
) -> None:
    """The cache a call runs on is its own shared prefix computed in one pass, whatever was cached
    before: bf16 rounds a prefix computed in pieces, or cut from a longer one, differently, and a
    resumed run (other calls before this one) would then sample other text."""
    longer = chats(["Tell me about yourself.", "Tell me a joke.", "Tell me what you care about."])
    logits = []
    answers = []
    for before in ([], [longer]):
        llm = loaded(trained_tiny_model, dtype="bfloat16", temperature=1.0, max_new_tokens=8)
        for conversations in before:  # shares the system prompt and more with the call that follows
            assert shared_prefix(prompt_ids(llm, conversations)) > shared_prefix(prompt_ids(llm, chats()))
            llm.generate(conversations, **llm.generation_kwargs)
        with monkeypatch.context() as patch:
            calls = record_forwards(patch, llm)
            answers.append(llm.generate(chats(), **llm.generation_kwargs))
        logits.append([call.last_logits for call in calls])
    assert answers[0] == answers[1]
    assert all(torch.equal(a, b) for a, b in zip(*logits, strict=True))


def _generated(monkeypatch: pytest.MonkeyPatch, llm: SeededTransformersLLM) -> list[list[int]]:
    """The new token ids of every generate call from now on (rows of the latest call)."""
    model = llm._pipeline.model
    generate: Callable[..., Any] = model.generate
    rows: list[list[int]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        sequences = generate(*args, **kwargs)
        rows[:] = sequences[:, kwargs["input_ids"].shape[1] :].tolist()
        return sequences

    monkeypatch.setattr(model, "generate", recording)
    return rows


@pytest.mark.parametrize("max_new_tokens", [3, 40])
def test_finish_reason_and_token_counts_are_exact(
    monkeypatch: pytest.MonkeyPatch, trained_tiny_model: Path, tiny_model: Path, max_new_tokens: int
) -> None:
    trained = loaded(trained_tiny_model, temperature=1.0, max_new_tokens=max_new_tokens)
    eos = trained._eos_ids
    rows = _generated(monkeypatch, trained)
    outputs = trained.generate(chats(), num_generations=2, **trained.generation_kwargs)
    prompts = prompt_ids(trained, chats())
    reasons = []
    for index, output in enumerate(outputs):
        stats = output["statistics"]
        assert stats["input_tokens"] == [len(prompts[index])] * 2
        for generation, (reason, tokens) in enumerate(
            zip(stats["finish_reason"], stats["output_tokens"], strict=True)
        ):
            row = rows[2 * index + generation]
            first_end = next((i for i, token in enumerate(row) if token in eos), None)
            if reason == "stop":  # counted up to and with the first end token
                assert first_end is not None and tokens == first_end + 1 <= max_new_tokens
            else:
                assert reason == "length" and first_end is None and tokens == max_new_tokens
            reasons.append(reason)
    # 3 tokens cut the trained model's answers off; 40 let it end most of them itself
    assert reasons.count("length") >= 6 if max_new_tokens == 3 else reasons.count("stop") >= 6

    random = loaded(tiny_model, temperature=1.0, max_new_tokens=max_new_tokens)  # never samples its end
    for output in random.generate(chats(), **random.generation_kwargs):
        assert output["statistics"]["finish_reason"] == ["length"]
        assert output["statistics"]["output_tokens"] == [max_new_tokens]
