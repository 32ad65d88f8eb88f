"""The provenance block every charforge record carries: what made it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from charforge.schemas.base import NonBlankStr, Scalar, Sha256, StrictModel


class Provenance(StrictModel):
    """What produced a record.

    ``models`` maps a role (``teacher``, ``student``, ``judge``…) to the model it used, ``sampling``
    maps the same roles to their sampling parameters, so a pair records both of its generators, and
    ``generation_dtype`` the dtype each local role generated in, resolved (``auto`` is bf16 on one CPU and
    fp32 on another: the same params and seed give the same corpus per resolved dtype).
    """

    generator: NonBlankStr = Field(description="Dotted name of the charforge stage that wrote the row.")
    tool_version: NonBlankStr
    models: dict[str, str] = Field(default_factory=dict)
    sampling: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    generation_dtype: dict[str, str] = Field(default_factory=dict)
    constitution_sha256: Sha256 | None = None
    seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_null_map_entries(cls, data: Any) -> Any:
        # Parquet stores these maps as structs: a key present in any row reads back as null in the
        # rows that lack it. A null entry means "absent", never a model called None.
        if isinstance(data, dict):
            data = dict(data)
            for name in ("models", "sampling", "generation_dtype"):
                value = data.get(name)
                if name in data and value is None:
                    del data[name]
                elif isinstance(value, dict):
                    data[name] = {key: item for key, item in value.items() if item is not None}
        return data
