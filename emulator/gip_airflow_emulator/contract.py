"""The emulator's server-side request rules, written from the GIP seed documents (not the provider's models).

The provider validates requests with its own, stricter client-side models (:mod:`gip_airflow.api`). If
the emulator used those too, the two would agree by construction and the emulator could never show a
difference between them and GIP. These models follow what the seeds show GIP accepts, and where the
seeds say GIP behaves differently from the client, they behave like GIP: a ``relative_time_range``
next to an explicit window is accepted, and the relative range is applied when the run executes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, RootModel, SecretStr, field_validator, model_validator

#: An ISO-8601 duration as the seeds write them: ``PT12H``, ``PT24H``, ``P7D``, ``P1DT6H`` ...
_DURATION = re.compile(
    r"P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?"
)


class _Body(BaseModel):
    """A request body; unknown keys are refused (a strict server), ``to_wire`` gives it back as JSON."""

    model_config = ConfigDict(extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


Text = Annotated[str, Field(min_length=1)]


class CredentialIn(_Body):
    service_name: Literal["LANGFUSE"] = "LANGFUSE"
    alias: Text
    base_url: Text
    public_key: Text
    private_key: SecretStr

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://\S+$", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")


def _duration(v: str | None) -> str | None:
    if v is not None and (not _DURATION.fullmatch(v) or not any(c.isdigit() and c != "0" for c in v)):
        raise ValueError(f"{v!r} is not an ISO-8601 duration such as 'PT12H'")
    return v


class _Filter(_Body):
    """A Langfuse filter; every field may be null. ``relative_time_range`` wins over the window. [doc]"""

    _window: ClassVar[tuple[str, str]] = ("", "")

    @model_validator(mode="after")
    def _window_order(self) -> _Filter:
        start, end = (getattr(self, f) for f in self._window)
        relative = getattr(self, "relative_time_range", None)  # GIP applies it and ignores the window
        if start is not None and end is not None and start >= end and not relative:
            raise ValueError(f"{self._window[0]} ({start}) must be before {self._window[1]} ({end})")
        return self


class TraceFilterIn(_Filter):
    name: str | None = None
    from_timestamp: int | None = None
    to_timestamp: int | None = None
    tags: list[str] | None = None
    version: str | None = None
    release: str | None = None
    relative_time_range: str | None = None

    _window = ("from_timestamp", "to_timestamp")
    _relative = field_validator("relative_time_range")(lambda cls, v: _duration(v))


class ObservationFilterIn(_Filter):
    name: str | None = None
    from_start_time: int | None = None
    to_start_time: int | None = None
    version: str | None = None
    relative_time_range: str | None = None

    _window = ("from_start_time", "to_start_time")
    _relative = field_validator("relative_time_range")(lambda cls, v: _duration(v))


Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class DatasetConfigIn(_Body):
    integrated_service_credential_id: Text
    dataset_name: Text
    include_archived_items: bool = False

    @field_validator("dataset_name")
    @classmethod
    def _no_whitespace(cls, v: str) -> str:
        if re.search(r"\s", v):  # [doc] GIP supports only dataset names without whitespace
            raise ValueError(f"{v!r} contains whitespace; GIP supports dataset names without whitespace only")
        return v


class TraceConfigIn(_Body):
    integrated_service_credential_id: Text
    sampling_rate: Rate = 1.0
    max_trace_count: int | None = Field(default=None, ge=1)
    trace_filter_request: TraceFilterIn = Field(default_factory=TraceFilterIn)


class ObservationConfigIn(_Body):
    integrated_service_credential_id: Text
    sampling_rate: Rate = 1.0
    max_observation_count: int | None = Field(default=None, ge=1)
    observation_filter_request: ObservationFilterIn = Field(default_factory=ObservationFilterIn)


class _ExperimentIn(_Body):
    name: Text
    description: str | None = None


class DatasetExperimentIn(_ExperimentIn):
    type: Literal["langfuse_dataset"]
    config: DatasetConfigIn


class TraceExperimentIn(_ExperimentIn):
    type: Literal["langfuse_trace"]
    config: TraceConfigIn


class ObservationExperimentIn(_ExperimentIn):
    type: Literal["langfuse_observation"]
    config: ObservationConfigIn


class ExperimentIn(RootModel[DatasetExperimentIn | TraceExperimentIn | ObservationExperimentIn]):
    """An experiment; ``type`` picks the config's rules."""

    root: Annotated[
        DatasetExperimentIn | TraceExperimentIn | ObservationExperimentIn, Field(discriminator="type")
    ]


class CategoryIn(_Body):
    index: int = Field(ge=0)
    name: Text


class BoundIn(_Body):
    value: float = Field(allow_inf_nan=False)


class RangeIn(_Body):
    min: BoundIn
    max: BoundIn

    @model_validator(mode="after")
    def _ordered(self) -> RangeIn:
        if self.min.value >= self.max.value:
            raise ValueError(f"min ({self.min.value}) must be below max ({self.max.value})")
        return self


class CategoryMetricIn(_Body):
    type: Literal["category"]
    config: list[CategoryIn] = Field(min_length=1)


class NumericMetricIn(_Body):
    type: Literal["numeric"]
    config: RangeIn


class BoolMetricIn(_Body):
    """[doc] A bool metric has no config; a null one is taken as none."""

    type: Literal["bool"]
    config: None = None

    def to_wire(self) -> dict[str, Any]:
        return {"type": "bool"}


MetricIn = Annotated[CategoryMetricIn | NumericMetricIn | BoolMetricIn, Field(discriminator="type")]


class EvaluationConfigIn(_Body):
    judge_model_seq_id: int
    judge_model_public_id: Text
    judge_model_parameters: dict[str, Any] = Field(default_factory=dict)
    judge_prompt: Text


class EvaluatorIn(_Body):
    name: Text
    type: Literal["llm_judge"] = "llm_judge"
    metric: MetricIn
    evaluation_config: EvaluationConfigIn


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Text
    content: str


class TemplateIn(_Body):
    messages: list[MessageIn] = Field(min_length=1)


class ConverterIn(_Body):
    model_seq_id: int
    model_public_id: Text
    model_parameters: dict[str, Any] = Field(default_factory=dict)
    input_prompt_trajectory_template: TemplateIn


class ScoreSyncIn(_Body):
    score_name: Text
    sync_score: bool = True


class MetadataIn(_Body):
    model_config = ConfigDict(extra="allow")

    langfuse_integration_config: ScoreSyncIn | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class RunIn(_Body):
    evaluator_id: Text
    display_name: Annotated[str, Field(min_length=1, max_length=255)]
    target_data_converter: ConverterIn | None = None
    metadata: MetadataIn | None = None


def _timezone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{v!r} is not an IANA time zone name such as 'Asia/Seoul'") from None
    return v


class AutoEvaluationIn(_Body):
    evaluator_id: Text
    enabled: bool = True
    name: Text
    schedule: Text
    timezone: str = "Etc/UTC"  # [doc] default
    target_data_converter: ConverterIn | None = None
    metadata: MetadataIn | None = None

    _tz = field_validator("timezone")(lambda cls, v: _timezone(v))


class AutoEvaluationPatchIn(_Body):
    """[assumed] The fields a PATCH may change."""

    enabled: bool | None = None
    name: str | None = None
    schedule: str | None = None
    timezone: str | None = None

    _tz = field_validator("timezone")(lambda cls, v: v if v is None else _timezone(v))


__all__ = [
    "AutoEvaluationIn",
    "AutoEvaluationPatchIn",
    "CredentialIn",
    "EvaluatorIn",
    "ExperimentIn",
    "RunIn",
]
