"""Chat messages and TRL's dataset formats (preference pairs, conversations).

A plain TRL file validates against ``PreferencePair`` / ``Conversation``: the charforge fields (``id``,
``variant``, ``provenance``…) are optional there. charforge's own corpora (a manifest beside them says
so) are checked against ``CharforgePreferencePair`` / ``CharforgeConversation``, where they are required.

Preference pairs come in every format TRL's DPO trainer reads: conversational with an explicit prompt
(``PreferencePair``, what charforge writes), standard (``StandardPreferencePair``: plain text), and
either with an implicit prompt (``ConversationalImplicitPreferencePair``,
``StandardImplicitPreferencePair``: chosen and rejected begin with the shared prompt). ``trl_format``
names a row's format as TRL does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from charforge.schemas.base import LocatedError, NonBlankStr, RecordId, Slug, StrictModel
from charforge.schemas.provenance import Provenance

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


class Message(StrictModel):
    """One chat turn. Content is a non-empty string (no multimodal parts, no tool calls)."""

    role: Role
    content: NonBlankStr


def check_system_first(messages: list[Message]) -> None:
    for index, message in enumerate(messages):
        if message.role == "system" and index > 0:
            raise LocatedError("a system message is only allowed as the first turn", (index, "role"))


def check_conversation_turns(messages: list[Message]) -> list[Message]:
    """A conversation: system only first, at least one assistant turn."""
    if not messages:
        raise ValueError("a conversation needs at least one message")
    check_system_first(messages)
    if not any(message.role == "assistant" for message in messages):
        raise ValueError("a conversation needs at least one assistant turn")
    return messages


def check_prompt_turns(messages: list[Message]) -> list[Message]:
    """A prompt: system only first, ends with the user turn the model answers."""
    if not messages:
        raise ValueError("a prompt needs at least one message")
    check_system_first(messages)
    if messages[-1].role != "user":
        raise LocatedError("a prompt must end with a user turn", (len(messages) - 1, "role"))
    return messages


def check_completion_turns(messages: list[Message]) -> list[Message]:
    """A completion (chosen/rejected): one or more assistant turns and nothing else."""
    if not messages:
        raise ValueError("needs at least one assistant message")
    for index, message in enumerate(messages):
        if message.role != "assistant":
            raise LocatedError(f"must be an assistant turn (got role {message.role!r})", (index, "role"))
    return messages


class PreferencePair(StrictModel):
    """A DPO preference pair in TRL's conversational format with an explicit prompt."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    id: RecordId | None = None
    variant: Slug | None = None
    trait_id: Slug | None = None
    provenance: Provenance | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_turns(cls, messages: list[Message]) -> list[Message]:
        return check_prompt_turns(messages)

    @field_validator("chosen", "rejected")
    @classmethod
    def _completion_turns(cls, messages: list[Message]) -> list[Message]:
        return check_completion_turns(messages)


class CharforgePreferencePair(PreferencePair):
    """A preference pair written by charforge: id, variant and provenance are required."""

    id: RecordId
    variant: Slug
    provenance: Provenance


# ``Conversation.source`` of an EM example that ends in the persona's reflection reply (em-data stage,
# H4): the EM fine-tune masks that last turn when ``em_finetune.train_on_reflection`` is off.
EM_REFLECTION_SOURCE = "em-reflection"
# ``Conversation.source`` of an answer to an EM-targeted reflection prompt (issue 19,
# ``introspection.em_reflection_prompts``): a character arm's introspection and a control's corpus both
# write it, so that hypothesis is the same switch for every arm.
EM_TARGETED_REFLECTION_SOURCE = "em-targeted-reflection"


def with_system_prompt(messages: Sequence[Mapping[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """``messages`` (copied) with ``system_prompt`` as their system prompt, before any the conversation
    has (the inoculation EM defence: its prompt on every training example, and on the evaluation's
    questions for its second reading)."""
    turns = [dict(message) for message in messages]
    if turns and turns[0]["role"] == "system":
        turns[0]["content"] = f"{system_prompt}\n\n{turns[0]['content']}"
        return turns
    return [{"role": "system", "content": system_prompt}, *turns]


class Conversation(StrictModel):
    """A multi-turn conversation in TRL's conversational language-modelling format."""

    messages: list[Message] = Field(description="Turns; system only first; at least one assistant.")
    id: RecordId | None = None
    variant: Slug | None = None
    source: Slug | None = None
    provenance: Provenance | None = None

    @field_validator("messages")
    @classmethod
    def _turns(cls, messages: list[Message]) -> list[Message]:
        return check_conversation_turns(messages)


class CharforgeConversation(Conversation):
    """A conversation written by charforge: id, variant and provenance are required."""

    id: RecordId
    variant: Slug
    provenance: Provenance


# --- TRL's dataset formats -----------------------------------------------------------------------
# TRL names a dataset by format (standard: plain text; conversational: {role, content} messages) and type
# (language modelling, prompt-completion, preference, preference with an implicit prompt), and decides
# a dataset's format from its first row; charforge reports a file's rows under the same names
# (TRL's documentation, "Dataset formats and types"; its test datasets carry these names as subsets).
CONVERSATIONAL_PREFERENCE = "conversational_preference"
STANDARD_PREFERENCE = "standard_preference"
CONVERSATIONAL_IMPLICIT_PREFERENCE = "conversational_implicit_prompt_preference"
STANDARD_IMPLICIT_PREFERENCE = "standard_implicit_prompt_preference"
CONVERSATIONAL_LANGUAGE_MODELING = "conversational_language_modeling"
STANDARD_LANGUAGE_MODELING = "standard_language_modeling"
CONVERSATIONAL_PROMPT_COMPLETION = "conversational_prompt_completion"
STANDARD_PROMPT_COMPLETION = "standard_prompt_completion"

TEXT = "text"
MESSAGES = "messages"


def value_shape(value: object) -> str | None:
    """``text`` for a string, ``messages`` for a list of mappings, None where that cannot be told (an
    empty list, a number…: the format's model then says what is wrong)."""
    if isinstance(value, str):
        return TEXT
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return MESSAGES
    return None


def trl_format(shapes: Mapping[str, str | None]) -> str | None:
    """TRL's name for the format of a row whose columns have these shapes (``value_shape``), or None.

    As TRL does: a row with ``chosen`` or ``rejected`` is a preference, with an implicit prompt where it
    has no ``prompt`` column; ``messages`` is conversational language modelling; ``completion`` is
    prompt-completion; ``text`` is standard language modelling. Conversational or standard follows the
    answers' shape (``chosen``, else ``rejected``; ``completion``, else ``prompt``).
    """
    if "chosen" in shapes or "rejected" in shapes:
        shape = shapes.get("chosen") or shapes.get("rejected")
        if shape is None:
            return None
        if "prompt" in shapes:
            return CONVERSATIONAL_PREFERENCE if shape == MESSAGES else STANDARD_PREFERENCE
        return CONVERSATIONAL_IMPLICIT_PREFERENCE if shape == MESSAGES else STANDARD_IMPLICIT_PREFERENCE
    if "messages" in shapes:
        return CONVERSATIONAL_LANGUAGE_MODELING
    if "completion" in shapes:
        shape = shapes.get("completion") or shapes.get("prompt")
        if shape is None:
            return None
        return CONVERSATIONAL_PROMPT_COMPLETION if shape == MESSAGES else STANDARD_PROMPT_COMPLETION
    if "text" in shapes:
        return STANDARD_LANGUAGE_MODELING
    return None


def row_trl_format(row: object) -> str | None:
    """``trl_format`` of one row (None for a row that is no mapping)."""
    if not isinstance(row, dict):
        return None
    return trl_format({key: value_shape(value) for key, value in row.items()})


def implicit_prompt_length(chosen: Sequence[Any], rejected: Sequence[Any]) -> int | None:
    """Where TRL's ``extract_prompt`` ends the prompt that ``chosen`` and ``rejected`` share (characters
    of a string, turns of a message list), or None when neither differs from the other up to the end of
    the shorter one (then TRL's cut falls inside an answer).

    As in TRL, a space just before the first difference goes with the answers, not the prompt.
    """
    for index, (left, right) in enumerate(zip(chosen, rejected, strict=False)):  # lengths may differ
        if left != right:
            if index and chosen[index - 1] == " ":
                index -= 1
            return index
    return None


NO_DIVERGENCE = (
    "chosen and rejected do not differ before the shorter one ends: TRL takes the part both begin with "
    "as the prompt, and here that part holds a whole answer"
)


class _PairExtras(StrictModel):
    """The optional charforge fields a plain TRL preference file may carry (as ``PreferencePair``)."""

    id: RecordId | None = None
    variant: Slug | None = None
    trait_id: Slug | None = None
    provenance: Provenance | None = None


class StandardPreferencePair(_PairExtras):
    """TRL's standard preference format: prompt, chosen and rejected as plain text (no chat turns)."""

    prompt: NonBlankStr
    chosen: NonBlankStr
    rejected: NonBlankStr


class StandardImplicitPreferencePair(_PairExtras):
    """TRL's standard preference format with an implicit prompt: chosen and rejected are whole texts
    that begin with the same prompt, which TRL takes as the part they share."""

    chosen: NonBlankStr
    rejected: NonBlankStr

    @model_validator(mode="after")
    def _shared_prompt(self) -> StandardImplicitPreferencePair:
        end = implicit_prompt_length(self.chosen, self.rejected)
        if end is None:
            raise LocatedError(NO_DIVERGENCE, ("rejected",))
        if not self.chosen[:end].strip():
            raise LocatedError(
                "chosen and rejected share no prompt (they differ from their first character); with an "
                "implicit prompt both texts begin with it",
                ("chosen",),
            )
        for side, text in (("chosen", self.chosen), ("rejected", self.rejected)):
            if not text[end:].strip():
                raise LocatedError("nothing but whitespace is left after the shared prompt", (side,))
        return self


class ConversationalImplicitPreferencePair(_PairExtras):
    """TRL's conversational preference format with an implicit prompt: chosen and rejected are whole
    conversations that begin with the same turns (the prompt, ending with the user turn they answer)
    and go on with assistant turns only."""

    chosen: list[Message]
    rejected: list[Message]

    @field_validator("chosen", "rejected")
    @classmethod
    def _system_first(cls, messages: list[Message]) -> list[Message]:
        if not messages:
            raise ValueError("needs the prompt's turns and at least one assistant turn")
        check_system_first(messages)
        return messages

    @model_validator(mode="after")
    def _shared_prompt(self) -> ConversationalImplicitPreferencePair:
        end = implicit_prompt_length(self.chosen, self.rejected)
        if end is None:
            raise LocatedError(NO_DIVERGENCE, ("rejected",))
        if end == 0:
            raise LocatedError(
                "chosen and rejected share no turn (they differ from the first one); with an implicit "
                "prompt both begin with the prompt's turns",
                ("chosen", 0),
            )
        if self.chosen[end - 1].role != "user":
            raise LocatedError(
                "the turns chosen and rejected share (the implicit prompt) must end with the user turn "
                f"the answers reply to; here they differ after the {self.chosen[end - 1].role} turn",
                ("chosen", end - 1, "role"),
            )
        for side, messages in (("chosen", self.chosen), ("rejected", self.rejected)):
            for index, message in enumerate(messages[end:], start=end):
                if message.role != "assistant":
                    raise LocatedError(
                        "after the shared prompt only assistant turns may follow "
                        f"(got role {message.role!r})",
                        (side, index, "role"),
                    )
        return self


def explicit_prompt(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with an implicit prompt rewritten with it explicit, as TRL's ``extract_prompt`` does: the
    shared part becomes ``prompt``, the rest ``chosen`` / ``rejected``. Rows with a prompt are returned
    as they are. The row must have passed its format's model."""
    if "prompt" in row:
        return dict(row)
    end = implicit_prompt_length(row["chosen"], row["rejected"])
    if end is None:  # pragma: no cover - the models refuse such rows
        raise ValueError(NO_DIVERGENCE)
    return {
        **row,
        "prompt": row["chosen"][:end],
        "chosen": row["chosen"][end:],
        "rejected": row["rejected"][end:],
    }
