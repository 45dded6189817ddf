"""Request models of the runtime control API (``/v1/admin/...``, admin keys only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    tier: str = Field(min_length=1, max_length=128, description="the candidate tier (registered first)")
    share: float = Field(gt=0.0, le=1.0, description="share of the workload's in-scope auto traffic it gets")
    competence_artifact: str | None = Field(default=None, description="the candidate's competence index (.skops)")
    cascade_artifact: str | None = Field(default=None, description="the candidate's cascade confidence model "
                                         "(.skops, `distill cascade`): it answers through the cascade")


class RouterRequest(BaseModel):
    """The default chain's router, threshold and competence index (null: the config's)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    artifact: str | None = Field(default=None, description="router artifact (.skops)")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    competence_artifact: str | None = Field(default=None, description="competence index (.skops)")
