"""The prediction API's bodies (pydantic only): what `invoke serve` and Azure ML's endpoint
accept, and what `invoke predict` checks a states file against before sending it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

State = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A JSON number, finite: ``true`` or ``"8.57"`` is refused, as the in-process runtime does."""


class PredictRequest(BaseModel):
    """One set of states (``states``) or several (``batch``), by name, in physical units."""

    model_config = ConfigDict(extra="forbid")

    states: dict[str, State] | None = None
    batch: list[dict[str, State]] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.states is None) == (self.batch is None):
            raise ValueError("give either 'states' or 'batch'")
        return self


class PredictResponse(BaseModel):
    action: dict[str, float] | None = None
    actions: list[dict[str, float]] | None = None
