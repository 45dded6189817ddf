"""Request model for creating an API key over HTTP (admins only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=128)
    admin: bool = False
    rpm: int | None = Field(default=None, ge=1, le=2**31 - 1, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, le=2**31 - 1, description="tokens per minute")
    budget: float | None = Field(default=None, gt=0, le=1e12, description="money per budget_period")
    budget_period: Literal["day", "month"] | None = None
    capture: bool = Field(default=False, description="opt this key's traffic in to content capture (the flywheel)")

    @model_validator(mode="after")
    def _budget_needs_period(self) -> CreateKeyRequest:
        if (self.budget is None) != (self.budget_period is None):
            raise ValueError("'budget' and 'budget_period' go together")
        return self
