"""Chat messages and TRL's conversational formats (preference pairs, conversations).

A plain TRL file validates against ``PreferencePair`` / ``Conversation``: the charforge fields (``id``,
``variant``, ``provenance``…) are optional there. charforge's own corpora (a manifest beside them says
so) are checked against ``CharforgePreferencePair`` / ``CharforgeConversation``, where they are required.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

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
