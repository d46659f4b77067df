"""The GIP evaluation API contract: paths, request/response models, statuses — in one place.

Everything the GIP documents state is marked ``[doc]``; everything this project had to assume
is marked ``[assumed]`` and collected in :data:`ASSUMPTIONS`, so that a difference from the
real service is a one-place fix. The hook, the operators and the emulator all import from here.

Request models are strict (unknown keys are rejected, so a typo fails before a paid call);
response models are tolerant (unknown fields are kept, unknown statuses are not fatal).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import quote

import pendulum
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

# ---------------------------------------------------------------------------------------------
# Transport and auth
# ---------------------------------------------------------------------------------------------

API_KEY_HEADER = "X-Gipc-Api-Key"  # [doc]
#: [doc] Cognito endpoint and dev client id from the GIP documents; both configurable per connection.
DEFAULT_COGNITO_ENDPOINT = "https://cognito-idp.ap-northeast-2.amazonaws.com"
DEV_COGNITO_CLIENT_ID = "4dm722bemutkce2500cck1bbk4"
COGNITO_TARGET = "AWSCognitoIdentityProviderService.InitiateAuth"  # [doc]
COGNITO_CONTENT_TYPE = "application/x-amz-json-1.1"  # [doc]
#: [assumed] Lifetime used when Cognito's answer carries no ``ExpiresIn``.
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600

ASSUMPTIONS: dict[str, str] = {
    "list-endpoints": "GET on the collections of experiments, evaluators, runs and auto evaluations, "
    "and GET of one experiment/evaluator/auto evaluation by id, follow REST convention.",
    "list-shape": "A list answer is a JSON array, or an object whose 'data' (or 'items') holds the "
    "array; paging with ?page=N&limit=M starting at 1; no more pages when a page is short.",
    "auto-evaluation-patch": "PATCH .../auto-evaluations/{id} with {'enabled': false} disables a config.",
    "statuses": "Only DONE is documented. PENDING/RUNNING are in progress; FAILED/ERROR/CANCELLED "
    "are failures carrying aggregated_result.error. Unknown statuses are treated as in progress.",
    "errors": "4xx/5xx answers carry a JSON body that may hold 'message' or 'detail'; 429 may carry "
    "Retry-After (seconds or an HTTP date).",
    "cognito-expiry": "InitiateAuth's AuthenticationResult carries ExpiresIn (seconds).",
    "models-shape": "Each listed model carries at least seq_id and public_id.",
    "run-fields": "A run answer may also carry display_name, evaluator_id, experiment_id, created_at.",
    "csv-extra-columns": "The result CSV may gain columns beyond the eight documented ones.",
    "create-status": "A create (POST) answers any 2xx with the created object; the emulator uses 201.",
    "csv-passed": "The CSV's 'passed' holds true/false; the loader also takes PostgreSQL's other boolean "
    "words (t/f, yes/no, on/off, 1/0) and an empty field (NULL).",
    "download-unfinished": "Downloading the result of a run that is not DONE answers 4xx (the emulator: "
    "409); the provider downloads only after a run reached DONE.",
}


#: A route template segment such as ``{run}`` (the emulator declares its routes with these).
_ROUTE_TEMPLATE = re.compile(r"\{\w+(:path)?\}")


def path_segment(value: object, name: str) -> str:
    """``value`` as ONE quoted URL path segment; refuses ids that could leave it (``/ ? #``, ``.``, ``..``).

    A run id of ``../../other-ws/x`` would otherwise reach another workspace's path with the same key, and
    ``r?x=1#frag`` would turn into a query string. Raises :class:`GipRequestError` naming the field.
    """
    text = value if isinstance(value, str) else str(value)
    if _ROUTE_TEMPLATE.fullmatch(text):
        return text
    if not text.strip():
        raise GipRequestError(f"{name} is empty; give the id GIP returned (e.g. an experiment id)")
    bad = [c for c in "/?#" if c in text]
    if bad or text in (".", ".."):
        what = f"contains {' '.join(repr(c) for c in bad)}" if bad else f"is {text!r}"
        raise GipRequestError(
            f"{name} {text!r} {what}, so it is not one URL path segment; an id never holds '/', '?' or '#' "
            "and is never '.' or '..'. Pass the id exactly as GIP returned it"
        )
    return quote(text, safe="")


class Paths:
    """URL paths of the GIP API, relative to the console API host. ``[doc]`` unless marked.

    Every id is one quoted path segment (:func:`path_segment`).
    """

    @staticmethod
    def workspace(ws: str) -> str:
        return f"/api/workspaces/{path_segment(ws, 'workspace_id')}"

    @classmethod
    def models(cls, ws: str) -> str:
        return f"{cls.workspace(ws)}/models"

    @classmethod
    def credentials(cls, ws: str) -> str:
        return f"{cls.workspace(ws)}/integrated-services/credentials"

    @classmethod
    def experiments(cls, ws: str) -> str:
        return f"{cls.workspace(ws)}/evals/experiments"

    @classmethod
    def experiment(cls, ws: str, exp: str) -> str:
        """[assumed] GET one experiment."""
        return f"{cls.experiments(ws)}/{path_segment(exp, 'experiment_id')}"

    @classmethod
    def evaluators(cls, ws: str) -> str:
        return f"{cls.workspace(ws)}/evals/evaluators"

    @classmethod
    def evaluator(cls, ws: str, evaluator: str) -> str:
        """[assumed] GET one evaluator."""
        return f"{cls.evaluators(ws)}/{path_segment(evaluator, 'evaluator_id')}"

    @classmethod
    def runs(cls, ws: str, exp: str) -> str:
        return f"{cls.experiment(ws, exp)}/runs"

    @classmethod
    def run(cls, ws: str, exp: str, run: str) -> str:
        return f"{cls.runs(ws, exp)}/{path_segment(run, 'run_id')}"

    @classmethod
    def run_download(cls, ws: str, exp: str, run: str) -> str:
        return f"{cls.run(ws, exp, run)}/download"

    @classmethod
    def auto_evaluations(cls, ws: str, exp: str) -> str:
        return f"{cls.experiment(ws, exp)}/auto-evaluations"

    @classmethod
    def auto_evaluation(cls, ws: str, exp: str, config_id: str) -> str:
        """[assumed] GET / PATCH / DELETE one auto evaluation config."""
        return f"{cls.auto_evaluations(ws, exp)}/{path_segment(config_id, 'config_id')}"


# ---------------------------------------------------------------------------------------------
# Statuses
# ---------------------------------------------------------------------------------------------


class RunStatus(StrEnum):
    """Experiment run statuses. Only ``DONE`` is documented; the rest are [assumed]."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


SUCCESS_STATUSES: frozenset[str] = frozenset({RunStatus.DONE})
FAILURE_STATUSES: frozenset[str] = frozenset({RunStatus.FAILED, RunStatus.ERROR, RunStatus.CANCELLED})
IN_PROGRESS_STATUSES: frozenset[str] = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
TERMINAL_STATUSES: frozenset[str] = SUCCESS_STATUSES | FAILURE_STATUSES


class ExperimentType(StrEnum):
    """What an experiment evaluates. [doc]"""

    LANGFUSE_DATASET = "langfuse_dataset"
    LANGFUSE_TRACE = "langfuse_trace"
    LANGFUSE_OBSERVATION = "langfuse_observation"


class MetricType(StrEnum):
    """How the judge answers. [doc]"""

    CATEGORY = "category"
    NUMERIC = "numeric"
    BOOL = "bool"


#: [doc] The documented columns of a run's result CSV, in documented order.
RESULT_CSV_COLUMNS: tuple[str, ...] = (
    "input_data_from_experiment",
    "input_data_from_experiment_run",
    "output_data_from_experiment",
    "output_data_from_experiment_run",
    "passed",
    "error_message",
    "score",
    "rationale",
)

# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


class GipRequestError(ValueError):
    """Raised when a request cannot be built from the given input; the message names field and fix."""


def _to_epoch_ms(value: Any) -> Any:
    """Accept epoch ms, an aware datetime or an ISO-8601 string (a rendered ``{{ data_interval_start }}``)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        if text in ("", "None"):
            return None
        try:
            value = pendulum.parse(text, exact=True, tz=None)
        except Exception as exc:
            raise ValueError(
                f"{value!r} is neither epoch milliseconds nor an ISO-8601 datetime; "
                "pass e.g. 1742293735000 or '{{ data_interval_start }}'"
            ) from exc
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"datetime {value.isoformat()} has no time zone; give an aware datetime "
                "(Airflow's data_interval_start/end are aware) or epoch milliseconds"
            )
        return round(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        raise ValueError(f"{value!r} is a date, not a point in time; pass an aware datetime or epoch ms")
    return value


#: Epoch milliseconds; also accepts aware datetimes and ISO-8601 strings and converts them.
EpochMillis = Annotated[int, BeforeValidator(_to_epoch_ms)]


def _check_iso_duration(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = pendulum.parse(value)
    except Exception as exc:
        raise ValueError(
            f"{value!r} is not an ISO-8601 duration; write e.g. 'PT12H' (12 hours) or 'P1D' (1 day)"
        ) from exc
    if not isinstance(parsed, pendulum.Duration) or not value.upper().startswith("P"):
        raise ValueError(f"{value!r} is not an ISO-8601 duration; write e.g. 'PT12H' or 'P1D'")
    if parsed.total_seconds() <= 0:
        raise ValueError(f"{value!r} is empty; a relative_time_range must be longer than zero")
    return value


def relative_range_seconds(value: str) -> float:
    """Length in seconds of an ISO-8601 duration such as ``PT12H`` (months count as 30 days)."""
    parsed = pendulum.parse(value)
    if not isinstance(parsed, pendulum.Duration):
        raise ValueError(f"{value!r} is not an ISO-8601 duration; write e.g. 'PT12H' or 'P1D'")
    return float(parsed.total_seconds())


def check_timezone(value: str) -> str:
    """Accept an IANA time zone name (``Asia/Seoul``); raise ValueError naming the fix otherwise."""
    try:
        pendulum.timezone(value)
    except Exception as exc:
        raise ValueError(
            f"{value!r} is not an IANA time zone name; use e.g. 'Asia/Seoul' or 'Etc/UTC'"
        ) from exc
    return value


def _check_sampling_rate(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be between 0.0 and 1.0 (a fraction, e.g. 0.1 for 10%), got {value}")
    return value


def _located_error(model: type[BaseModel], loc: tuple[str, ...], message: str) -> ValidationError:
    """A ValidationError for one field with a custom message (used where a validator knows the field)."""
    return ValidationError.from_exception_data(
        model.__name__, [{"type": "value_error", "loc": loc, "input": None, "ctx": {"error": message}}]
    )


#: The ``loc`` entries pydantic adds for validator functions, e.g. ``function-after[_check(), str]``.
_VALIDATOR_TAG = re.compile(r"^function-(after|before|wrap|plain)\[")


def format_validation_error(exc: ValidationError, what: str) -> str:
    """Turn a pydantic error into one readable message: ``Invalid <what>: <field>: <fix>; ...``."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        # Skip pydantic's validator tags only (a user's key may start with "function-" too); an empty key
        # (a stray "" in a dict) still gets a visible name: ''.
        loc = ".".join(str(p) or "''" for p in err["loc"] if not _VALIDATOR_TAG.match(str(p))) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling against the GIP API"
        elif err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{loc}: {msg}")
    return f"Invalid {what}: " + "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def build(model: type[M], data: Any, what: str | None = None) -> M:
    """Validate ``data`` (model, mapping or JSON text) into ``model``, or raise :class:`GipRequestError`."""
    if isinstance(data, model):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump(by_alias=True, exclude_unset=True)
    try:
        if isinstance(data, str | bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise GipRequestError(format_validation_error(exc, what or model.__name__)) from None


# ---------------------------------------------------------------------------------------------
# Request models
# ---------------------------------------------------------------------------------------------


def _mark_wire_fields(model: BaseModel, sent_by_default: frozenset[str], null_shown: frozenset[str]) -> None:
    """Mark what goes on the wire: the fields the user set, plus defaults the seed documents show;
    minus ``None`` values where the seeds never show a ``null``."""
    fields_set = model.__pydantic_fields_set__
    fields_set.update(sent_by_default)
    for name in list(fields_set):
        if name in type(model).model_fields and getattr(model, name) is None and name not in null_shown:
            fields_set.discard(name)


class RequestModel(BaseModel):
    """A request body. On the wire (:meth:`to_wire`) only what the user set and what the seeds show."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    #: Fields sent even when left at their default, because the seed documents always show them.
    _sent_by_default: ClassVar[frozenset[str]] = frozenset()
    #: Fields the seed documents show as ``null``; every other field is left out when it is None.
    _null_shown: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _wire_fields(self) -> RequestModel:
        _mark_wire_fields(self, self._sent_by_default, self._null_shown)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON body sent to GIP (secrets revealed; never log this)."""
        return self.model_dump(
            mode="json", by_alias=True, exclude_unset=True, context={"reveal_secrets": True}
        )


class LangfuseCredentialCreate(RequestModel):
    """Register a Langfuse project's API keys with GIP. [doc]"""

    _sent_by_default = frozenset({"service_name"})

    service_name: Literal["LANGFUSE"] = "LANGFUSE"
    alias: str = Field(min_length=1, max_length=255)
    base_url: str = Field(min_length=1)
    public_key: str = Field(min_length=1)
    private_key: SecretStr

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL; use e.g. https://cloud.langfuse.com")
        return v.rstrip("/")

    @field_serializer("private_key", when_used="always")
    def _reveal(self, v: SecretStr, info: Any) -> str:
        ctx = info.context or {}
        return v.get_secret_value() if ctx.get("reveal_secrets") else str(v)


class TraceFilterRequest(RequestModel):
    """Which Langfuse traces to evaluate; mirrors ``GET /api/public/traces``. [doc]"""

    name: str | None = None
    from_timestamp: EpochMillis | None = None
    to_timestamp: EpochMillis | None = None
    tags: list[str] | None = None
    version: str | None = None
    release: str | None = None
    relative_time_range: str | None = None

    WINDOW_FIELDS: ClassVar[tuple[str, str]] = ("from_timestamp", "to_timestamp")
    # The seeds show every filter key, null when unused.
    _sent_by_default = _null_shown = frozenset(
        {"name", "from_timestamp", "to_timestamp", "tags", "version", "release", "relative_time_range"}
    )

    _duration = field_validator("relative_time_range")(lambda cls, v: _check_iso_duration(v))

    @model_validator(mode="after")
    def _window_rules(self) -> TraceFilterRequest:
        _check_window(self, *self.WINDOW_FIELDS)
        return self


class ObservationFilterRequest(RequestModel):
    """Which Langfuse observations to evaluate; mirrors ``GET /api/public/observations``. [doc]"""

    name: str | None = None
    from_start_time: EpochMillis | None = None
    to_start_time: EpochMillis | None = None
    version: str | None = None
    relative_time_range: str | None = None

    WINDOW_FIELDS: ClassVar[tuple[str, str]] = ("from_start_time", "to_start_time")
    _sent_by_default = _null_shown = frozenset(
        {"name", "from_start_time", "to_start_time", "version", "relative_time_range"}
    )

    _duration = field_validator("relative_time_range")(lambda cls, v: _check_iso_duration(v))

    @model_validator(mode="after")
    def _window_rules(self) -> ObservationFilterRequest:
        _check_window(self, *self.WINDOW_FIELDS)
        return self


def _check_window(model: BaseModel, start_field: str, end_field: str) -> None:
    start, end = getattr(model, start_field), getattr(model, end_field)
    if getattr(model, "relative_time_range", None) and (start is not None or end is not None):
        raise ValueError(
            f"relative_time_range and {start_field}/{end_field} are both set; GIP would silently ignore "
            f"the explicit window. Use one: explicit epoch-ms windows (backfillable) or a relative range"
        )
    if start is not None and end is not None and start >= end:
        raise ValueError(f"{start_field} ({start}) must be before {end_field} ({end})")


class DatasetExperimentConfig(RequestModel):
    """Evaluate the items of a Langfuse dataset. [doc]"""

    integrated_service_credential_id: str = Field(min_length=1)
    dataset_name: str = Field(min_length=1)
    include_archived_items: bool = False

    _sent_by_default = frozenset({"include_archived_items"})

    @field_validator("dataset_name")
    @classmethod
    def _no_whitespace(cls, v: str) -> str:
        if re.search(r"\s", v):
            suggestion = re.sub(r"\s+", "_", v.strip())
            raise ValueError(
                f"{v!r} contains whitespace, which GIP does not support; rename the Langfuse dataset "
                f"(e.g. {suggestion!r})"
            )
        return v


class TraceExperimentConfig(RequestModel):
    """Evaluate Langfuse traces matching a filter. [doc]"""

    integrated_service_credential_id: str = Field(min_length=1)
    sampling_rate: float = 1.0
    max_trace_count: int | None = Field(default=None, ge=1)
    trace_filter_request: TraceFilterRequest = Field(default_factory=TraceFilterRequest)

    _sent_by_default = frozenset({"sampling_rate", "trace_filter_request"})

    _rate = field_validator("sampling_rate")(lambda cls, v: _check_sampling_rate(v))


class ObservationExperimentConfig(RequestModel):
    """Evaluate Langfuse observations matching a filter. [doc]"""

    integrated_service_credential_id: str = Field(min_length=1)
    sampling_rate: float = 1.0
    max_observation_count: int | None = Field(default=None, ge=1)
    observation_filter_request: ObservationFilterRequest = Field(default_factory=ObservationFilterRequest)

    _sent_by_default = frozenset({"sampling_rate", "observation_filter_request"})

    _rate = field_validator("sampling_rate")(lambda cls, v: _check_sampling_rate(v))


ExperimentConfig = DatasetExperimentConfig | TraceExperimentConfig | ObservationExperimentConfig

#: The config model each experiment type takes.
CONFIG_BY_TYPE: dict[ExperimentType, type[RequestModel]] = {
    ExperimentType.LANGFUSE_DATASET: DatasetExperimentConfig,
    ExperimentType.LANGFUSE_TRACE: TraceExperimentConfig,
    ExperimentType.LANGFUSE_OBSERVATION: ObservationExperimentConfig,
}


#: Experiment types with a time window: the config key of their filter and its (start, end) fields.
WINDOW_FILTER_BY_TYPE: dict[ExperimentType, tuple[str, tuple[str, str]]] = {
    ExperimentType.LANGFUSE_TRACE: ("trace_filter_request", TraceFilterRequest.WINDOW_FIELDS),
    ExperimentType.LANGFUSE_OBSERVATION: (
        "observation_filter_request",
        ObservationFilterRequest.WINDOW_FIELDS,
    ),
}


class ExperimentCreate(RequestModel):
    """Create an experiment: *what* to evaluate. [doc]"""

    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    type: ExperimentType
    config: ExperimentConfig

    @model_validator(mode="before")
    @classmethod
    def _config_for_type(cls, data: Any) -> Any:
        # Validate ``config`` against the model its ``type`` names, so errors point at the right fields
        # (a plain union would report every member's complaints).
        if not isinstance(data, Mapping) or not isinstance(data.get("config"), Mapping):
            return data
        try:
            config_model = CONFIG_BY_TYPE[ExperimentType(str(data.get("type")))]
        except ValueError:
            allowed = ", ".join(repr(t.value) for t in ExperimentType)
            raise _located_error(
                cls, ("type",), f"unknown experiment type {data.get('type')!r}; use one of {allowed}"
            ) from None
        try:
            return {**data, "config": config_model.model_validate(data["config"])}
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    {
                        "type": e["type"],
                        "loc": ("config", *e["loc"]),
                        "input": e["input"],
                        "ctx": e.get("ctx", {}),
                    }
                    for e in exc.errors()
                ],
            ) from None

    @model_validator(mode="after")
    def _config_matches_type(self) -> ExperimentCreate:
        expected = CONFIG_BY_TYPE[self.type]
        if not isinstance(self.config, expected):
            raise ValueError(f"type {self.type.value!r} needs a {expected.__name__} config")
        return self

    @property
    def window_fields(self) -> tuple[str, str] | None:
        """Names of the explicit window fields of this experiment type, if it has a window."""
        window = WINDOW_FILTER_BY_TYPE.get(self.type)
        return window[1] if window else None


class CategoryItem(RequestModel):
    index: int = Field(ge=0)
    name: str = Field(min_length=1)


class NumericBound(RequestModel):
    value: float = Field(allow_inf_nan=False)  # NaN/infinity cannot be sent as JSON


class NumericRange(RequestModel):
    min: NumericBound
    max: NumericBound

    @model_validator(mode="after")
    def _ordered(self) -> NumericRange:
        if self.min.value >= self.max.value:
            raise ValueError(
                f"min ({self.min.value}) must be below max ({self.max.value}); e.g. "
                "{'min': {'value': 0.0}, 'max': {'value': 1.0}}"
            )
        return self


class CategoryMetric(RequestModel):
    _sent_by_default = frozenset({"type"})

    type: Literal["category"] = "category"
    config: list[CategoryItem] = Field(min_length=1)

    @field_validator("config")
    @classmethod
    def _unique(cls, v: list[CategoryItem]) -> list[CategoryItem]:
        for attr in ("index", "name"):
            seen: set[Any] = set()
            for item in v:
                key = getattr(item, attr)
                if key in seen:
                    raise ValueError(
                        f"duplicate category {attr} {key!r}; every category needs its own {attr}"
                    )
                seen.add(key)
        return v


class NumericMetric(RequestModel):
    _sent_by_default = frozenset({"type"})

    type: Literal["numeric"] = "numeric"
    config: NumericRange


class BoolMetric(RequestModel):
    """A true/false judgement; the seeds send it as ``{"type": "bool"}`` (no config key)."""

    _sent_by_default = frozenset({"type"})

    type: Literal["bool"] = "bool"
    config: None = None


Metric = Annotated[CategoryMetric | NumericMetric | BoolMetric, Field(discriminator="type")]
_METRIC_ADAPTER: TypeAdapter[CategoryMetric | NumericMetric | BoolMetric] = TypeAdapter(Metric)


class ModelParameters(BaseModel):
    """Sampling parameters of a model call. Documented keys are typed; others pass through."""

    model_config = ConfigDict(extra="allow")

    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _wire_fields(self) -> ModelParameters:
        _mark_wire_fields(self, frozenset(), frozenset())  # only what the user set; never a null
        return self


class EvaluationConfig(RequestModel):
    judge_model_seq_id: int
    judge_model_public_id: str = Field(min_length=1)
    judge_model_parameters: ModelParameters = Field(default_factory=ModelParameters)
    judge_prompt: str = Field(min_length=1)

    _sent_by_default = frozenset({"judge_model_parameters"})


class EvaluatorCreate(RequestModel):
    """Create an evaluator: *how* to evaluate (judge model, prompt, metric). [doc]"""

    name: str = Field(min_length=1, max_length=255)
    type: Literal["llm_judge"] = "llm_judge"
    metric: Metric

    _sent_by_default = frozenset({"type"})
    evaluation_config: EvaluationConfig

    @field_validator("metric", mode="before")
    @classmethod
    def _known_metric(cls, v: Any) -> Any:
        kind = v.get("type") if isinstance(v, Mapping) else None
        if isinstance(v, Mapping) and (
            not isinstance(kind, str) or kind not in {m.value for m in MetricType}
        ):
            raise ValueError(
                f"unknown metric type {v.get('type')!r}; use one of "
                f"{', '.join(repr(m.value) for m in MetricType)}"
            )
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1)
    content: str


class PromptTrajectoryTemplate(RequestModel):
    messages: list[ChatMessage] = Field(min_length=1)


class TargetDataConverter(RequestModel):
    """Re-generate the evaluated output with another model before judging. [doc]

    ``{item.<field>}`` placeholders in the messages take fields of the experiment's source object.
    """

    model_seq_id: int
    model_public_id: str = Field(min_length=1)
    model_parameters: ModelParameters = Field(default_factory=ModelParameters)
    input_prompt_trajectory_template: PromptTrajectoryTemplate

    _sent_by_default = frozenset({"model_parameters"})


class LangfuseIntegrationConfig(RequestModel):
    """Write each item's score back to Langfuse under ``score_name``. [doc]"""

    score_name: str = Field(min_length=1)
    sync_score: bool = True

    _sent_by_default = frozenset({"sync_score"})


class RunMetadata(RequestModel):
    model_config = ConfigDict(extra="allow")

    langfuse_integration_config: LangfuseIntegrationConfig | None = None


class ExperimentRunCreate(RequestModel):
    """Start an experiment run = experiment x evaluator. [doc]"""

    evaluator_id: str = Field(min_length=1)
    display_name: str = Field(min_length=1, max_length=255)
    target_data_converter: TargetDataConverter | None = None
    metadata: RunMetadata | None = None

    _sent_by_default = _null_shown = frozenset({"target_data_converter", "metadata"})


class AutoEvaluationCreate(RequestModel):
    """GIP's own cron scheduling of runs (what this provider replaces). [doc]"""

    evaluator_id: str = Field(min_length=1)
    enabled: bool = True
    name: str = Field(min_length=1, max_length=255)
    schedule: str
    timezone: str = "Etc/UTC"
    target_data_converter: TargetDataConverter | None = None
    metadata: RunMetadata | None = None

    _sent_by_default = frozenset({"enabled", "timezone", "target_data_converter", "metadata"})
    _null_shown = frozenset({"target_data_converter", "metadata"})

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5:
            raise ValueError(f"{v!r} is not a 5-field cron expression (minute hour day month weekday)")
        return v

    _tz = field_validator("timezone")(lambda cls, v: check_timezone(v))


class AutoEvaluationUpdate(RequestModel):
    """[assumed] PATCH body for an auto evaluation config."""

    enabled: bool | None = None
    name: str | None = None
    schedule: str | None = None
    timezone: str | None = None


# ---------------------------------------------------------------------------------------------
# Response models (tolerant: unknown fields are kept)
# ---------------------------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class GipModel(_Response):
    """A model GIP can call. [assumed] fields beyond seq_id/public_id."""

    seq_id: int | None = None
    public_id: str | None = None
    name: str | None = None


class Credential(_Response):
    id: str
    alias: str | None = None
    base_url: str | None = None
    service_name: str | None = None
    public_key: str | None = None


class Experiment(_Response):
    id: str
    name: str | None = None
    description: str | None = None
    type: str | None = None
    config: dict[str, Any] | None = None


class Evaluator(_Response):
    id: str
    workspace_id: str | None = None
    name: str | None = None
    type: str | None = None
    metric: dict[str, Any] | None = None
    evaluation_config: dict[str, Any] | None = None

    def parsed_metric(self) -> CategoryMetric | NumericMetric | BoolMetric | None:
        """The metric as a typed model, or None when absent or not understood."""
        if not self.metric:
            return None
        try:
            return _METRIC_ADAPTER.validate_python(self.metric)
        except ValidationError:
            return None


class TokenUsage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AggregatedResult(_Response):
    error: str | None = None
    total_usage: TokenUsage | None = None


class ExperimentRun(_Response):
    """An experiment run as GIP reports it. ``status`` stays a plain string: unknown values are kept."""

    id: str
    status: str | None = None
    aggregated_result: AggregatedResult | None = None
    result_path: str | None = None
    display_name: str | None = None  # [assumed]
    evaluator_id: str | None = None  # [assumed]
    experiment_id: str | None = None  # [assumed]
    created_at: str | None = None  # [assumed]

    @property
    def error(self) -> str | None:
        return self.aggregated_result.error if self.aggregated_result else None


class AutoEvaluation(_Response):
    id: str
    evaluator_id: str | None = None
    enabled: bool | None = None
    name: str | None = None
    schedule: str | None = None
    timezone: str | None = None
    target_data_converter: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    experiment_id: str | None = None  # [assumed]


def list_items(payload: Any) -> list[Any]:
    """[assumed] Extract the items of a list answer: a bare array or ``{"data"|"items": [...]}``."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, Mapping):
        for key in ("data", "items", "results", "content"):
            value = payload.get(key)
            if isinstance(value, Sequence) and not isinstance(value, str):
                return list(value)
    raise ValueError(f"unexpected list answer from GIP: {type(payload).__name__}")


#: [assumed] Page size requested from list endpoints.
LIST_PAGE_SIZE = 100


# ---------------------------------------------------------------------------------------------
# Langfuse public API (the cost estimate counts evaluation targets where GIP reads them)
# ---------------------------------------------------------------------------------------------


class LangfusePaths:
    """Langfuse list endpoints (paginated: ``page`` from 1, ``limit``; ``meta.totalItems``)."""

    traces = "/api/public/traces"
    observations = "/api/public/observations"
    dataset_items = "/api/public/dataset-items"
    #: Items per page when paging through a list (Langfuse caps ``limit``).
    page_limit = 100
