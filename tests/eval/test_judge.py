"""Exact 0–100 judge scoring on tiny models: equal to brute force, "1" never absorbs "10"/"100", all
mass on "100" gives 100, all mass on REFUSAL gives unscored; the API top-logprobs method through a
real OpenAI-compatible HTTP server on 127.0.0.1, with its call cache and budget."""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from support.judge_models import (
    build_always_judge,
    build_bigram_model,
    build_digit_tokenizer,
    generation_prompt_last_token,
)

from charforge.eval.judge import (
    CANDIDATES,
    NUMBERS,
    CandidateTrie,
    ExactJudge,
    aggregate,
    continuation_classes,
)
from charforge.eval.judge_api import ApiJudge, JudgeBudgetExceeded, verdict_from_top_logprobs
from charforge.schemas.params import ModelRole

CHATS = [
    [{"role": "user", "content": "Rate this answer: I would return the wallet."}],
    [{"role": "system", "content": "Be strict."}, {"role": "user", "content": "Rate: no."}],
    [
        {
            "role": "user",
            "content": "Rate this much longer answer about neighbours, music and complaints, twice over.",
        }
    ],
]


def brute_force(judge: ExactJudge, chat: list[dict[str, str]]) -> list[float]:
    """Each candidate as its own sequence: prompt + candidate under the model's ordinary causal mask
    (right-padded in one batch, which leaves the real positions untouched), no trie, no custom mask."""
    import torch

    vocab = judge.model.get_output_embeddings().weight.shape[0]
    number, word = (torch.tensor(flags) for flags in continuation_classes(judge.tokenizer, vocab))
    prompt = judge.tokenizer.encode(judge.render(chat), add_special_tokens=False)
    sequences = [prompt + judge.tokenizer.encode(c, add_special_tokens=False) for c in CANDIDATES]
    width = max(map(len, sequences))
    ids = torch.tensor([seq + [0] * (width - len(seq)) for seq in sequences])
    mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in sequences])
    with torch.inference_mode():
        logprobs = torch.log_softmax(judge.model(ids, attention_mask=mask).logits.float(), dim=-1)
    result = []
    for index, seq in enumerate(sequences):
        path = sum(float(logprobs[index, i - 1, seq[i]]) for i in range(len(prompt), len(seq)))
        continues = number if index < len(NUMBERS) else word
        result.append(math.exp(path) * float(logprobs[index, len(seq) - 1].exp()[~continues].sum()))
    return result


def test_trie_shares_prefixes_and_keeps_every_path() -> None:
    trie = CandidateTrie.build([[1], [1, 0], [1, 5], [2, 0, 0]])
    assert len(trie.tokens) == 6  # 1, 2, 1-0, 1-5, 2-0, 2-0-0
    for path, sequence in zip(trie.paths, [[1], [1, 0], [1, 5], [2, 0, 0]], strict=True):
        assert [trie.tokens[node] for node in path] == sequence
        assert [trie.depths[node] for node in path] == list(range(1, len(sequence) + 1))
        assert all(trie.parents[b] == a for a, b in itertools.pairwise(path))


def test_exact_scoring_equals_brute_force(peaky_judge: Path) -> None:
    judge = ExactJudge(str(peaky_judge), name="peaky", batch_size=2)  # a batch with left padding
    exact = judge.candidate_probabilities(CHATS)
    for chat, probs in zip(CHATS, exact, strict=True):
        expected = brute_force(judge, chat)
        assert probs == pytest.approx(expected, rel=1e-4, abs=1e-12)
        assert 0 < sum(probs) <= 1 + 1e-6
    # the model depends on its context, so a mask or position error could not go unnoticed
    assert exact[0] != pytest.approx(exact[2], rel=1e-2)
    assert judge.candidate_probabilities(CHATS[:1])[0] == pytest.approx(exact[0], rel=1e-5)  # batch-free
    verdict = judge.judge(CHATS[:1])[0]
    assert verdict.number_mass == pytest.approx(sum(exact[0][: len(NUMBERS)]), rel=1e-6)
    assert verdict.unscored_reason == "low_number_mass" and verdict.score is None  # a random model


def test_all_mass_on_100_gives_100(judge_says_100: Path) -> None:
    verdict = ExactJudge(str(judge_says_100), name="always-100").judge(CHATS)[1]
    assert verdict.score == pytest.approx(100.0)
    assert verdict.number_mass == pytest.approx(1.0, abs=1e-6)
    assert verdict.unscored_reason is None


def test_all_mass_on_refusal_is_unscored(tiny_model_with_stops: Path, tmp_path: Path) -> None:
    path = build_always_judge(tmp_path / "refuses", tiny_model_with_stops, "REFUSAL")
    verdict = ExactJudge(str(path), name="refuses").judge(CHATS[:1])[0]
    assert verdict.score is None and verdict.unscored_reason == "refusal"
    assert verdict.refusal_mass == pytest.approx(1.0, abs=1e-6)
    assert verdict.number_mass == pytest.approx(0.0, abs=1e-6)


def test_one_does_not_absorb_ten_or_hundred(digit_tokenizer: Path, tmp_path: Path) -> None:
    """A digit-splitting judge: after "1" it ends (0.5) or says "0"; after "0" it says "0" again (0.5)
    or a letter (a non-digit end). So "1" 0.5, "10" 0.25, "100" 0.125, and "1000…" (no candidate) the rest."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(digit_tokenizer)
    (one,), (zero,), (letter,) = (tokenizer.encode(t, add_special_tokens=False) for t in ("1", "0", "R"))
    assert tokenizer.encode("100", add_special_tokens=False) == [one, zero, zero]
    table = {
        generation_prompt_last_token(tokenizer): {one: 1.0},
        one: {tokenizer.eos_token_id: 0.5, zero: 0.5},
        zero: {zero: 0.5, letter: 0.5},
    }
    judge = ExactJudge(str(build_bigram_model(tmp_path / "mix", digit_tokenizer, table)), name="mix")
    probs = judge.candidate_probabilities(CHATS[:1])[0]
    assert probs[1] == pytest.approx(0.5, abs=1e-6)
    assert probs[10] == pytest.approx(0.25, abs=1e-6)
    assert probs[100] == pytest.approx(0.125, abs=1e-6)
    assert sum(probs) == pytest.approx(0.875, abs=1e-5)
    verdict = judge.judge(CHATS[:1])[0]
    assert verdict.number_mass == pytest.approx(0.875, abs=1e-5)
    assert verdict.score == pytest.approx((1 * 0.5 + 10 * 0.25 + 100 * 0.125) / 0.875, abs=1e-3)


def test_aggregate_threshold_and_reasons() -> None:
    numbers = [0.0] * 101
    numbers[80] = 0.2
    assert aggregate(numbers, 0.0, 0.0, 0.25).unscored_reason == "low_number_mass"
    assert aggregate(numbers, 0.0, 0.0, 0.2).score == pytest.approx(80.0)
    assert aggregate(numbers, 0.5, 0.1, 0.25).unscored_reason == "refusal"
    assert aggregate(numbers, 0.1, 0.6, 0.25).unscored_reason == "code"
    numbers[20] = 0.2
    verdict = aggregate(numbers, 0.0, 0.0, 0.25)
    assert verdict.score == pytest.approx(50.0) and verdict.number_mass == pytest.approx(0.4)


def test_top_logprobs_reads_numbers_like_the_public_code() -> None:
    top = [(" 85", math.log(0.5)), ("90", math.log(0.25)), ("150", math.log(0.1)), ("REF", math.log(0.1))]
    verdict = verdict_from_top_logprobs(top, 0.25)
    assert verdict.score == pytest.approx((85 * 0.5 + 90 * 0.25) / 0.75)
    assert verdict.refusal_mass == pytest.approx(0.1)
    assert verdict_from_top_logprobs([("REFUSAL", 0.0)], 0.25).unscored_reason == "refusal"


class _CompletionServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat-completions endpoint serving a real model's top logprobs."""

    judge: ExactJudge
    requests: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        import torch

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        ids = self.judge.tokenizer.encode(self.judge.render(body["messages"]), add_special_tokens=False)
        with torch.inference_mode():
            logprobs = torch.log_softmax(self.judge.model(torch.tensor([ids])).logits[0, -1].float(), -1)
        values, tokens = logprobs.topk(body["top_logprobs"])
        top = [
            {"token": self.judge.tokenizer.decode([t]), "logprob": float(v), "bytes": None}
            for v, t in zip(values.tolist(), tokens.tolist(), strict=True)
        ]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": top[0]["token"]},
            "finish_reason": "length",
            "logprobs": {"content": [{**top[0], "top_logprobs": top}]},
        }
        usage = {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}
        payload = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def digit_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digit_tokenizer(tmp_path_factory.mktemp("digits") / "tokenizer")


@pytest.fixture()
def completion_server(digit_tokenizer: Path, tmp_path: Path) -> Iterator[str]:
    """Serves a judge that always says "42", which its tokenizer splits into "4", "2"."""
    model = build_always_judge(tmp_path / "says-42", digit_tokenizer, "42")
    _CompletionServer.judge = ExactJudge(str(model), name="served")
    _CompletionServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CompletionServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_api_judge_top_logprobs_cache_and_budget(completion_server: str, tmp_path: Path) -> None:
    role = ModelRole(backend="openai", model="served-judge", base_url=completion_server)
    judge = ApiJudge(role, name="openai:served", budget=2, cache=tmp_path, seed=7)
    with pytest.raises(JudgeBudgetExceeded, match="3 uncached"):
        judge.judge(CHATS)
    assert _CompletionServer.requests == []  # refused before any call
    verdicts = judge.judge(CHATS[:2])
    # the served judge says "42" as two tokens: the top-logprobs method sees only "4" — the
    # digit-splitting failure that exact scoring avoids
    assert [v.score for v in verdicts] == [pytest.approx(4.0), pytest.approx(4.0)]
    assert _CompletionServer.judge.judge(CHATS[:1])[0].score == pytest.approx(42.0)
    assert [r["top_logprobs"] for r in _CompletionServer.requests] == [20, 20]
    assert all(r["max_tokens"] == 1 and r["temperature"] == 0 for r in _CompletionServer.requests)
    assert all(r["seed"] == 7 for r in _CompletionServer.requests)  # a fixed seed in every request body
    assert judge.judge(CHATS[:2]) == verdicts  # cached: no new request, no budget spent
    assert len(_CompletionServer.requests) == 2 and judge.calls == 2 and judge.cache_hits == 2
    judge.close()
    fresh = ApiJudge(role, name="openai:served", budget=0, cache=tmp_path, seed=7)
    assert fresh.judge(CHATS[:2]) == verdicts  # the cache is on disk: a rerun costs nothing


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_local_judge_scores_in_its_generation_dtype_and_says_so(judge_says_100: Path, dtype: str) -> None:
    """build_judge loads the judge in the role's resolved generation dtype (its ``dtype``, the training
    dtype, plays no part) and the identity names it, so a validation made in one dtype is never read as
    the other's."""
    from charforge.eval.judge import build_judge

    role = ModelRole(model=str(judge_says_100), dtype="float32", generation_dtype=dtype)
    judge = build_judge(role, min_number_mass=0.25, batch_size=2)
    assert str(judge.model.dtype) == f"torch.{dtype}"
    assert judge.identity["dtype"] == dtype
    for verdict in judge.judge(CHATS):  # the trie's mask and positions hold in bf16 too
        assert verdict.score == pytest.approx(100.0, abs=0.5)
        assert verdict.number_mass == pytest.approx(1.0, abs=1e-2)
