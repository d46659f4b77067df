"""What a GIP run will cost before it starts: count the targets, apply sampling, price the judge tokens.

* Targets are counted where GIP reads them, through the Langfuse API: dataset items, or traces or
  observations in the experiment's window with its filters; then ``sampling_rate`` and the max count apply.
* Tokens per item come from the ledger's history for the same evaluator and judge model, else from
  :data:`DEFAULT_TOKENS_PER_ITEM` (or the ``tokens_per_item`` the task gives).
* Prices are US dollars per million prompt and completion tokens per judge model: :data:`DEFAULT_PRICES`,
  overridden by the Airflow Variable :data:`PRICE_TABLE_VARIABLE` or the ``price_table`` extra of the
  ``gip`` connection (JSON ``{"openai/gpt-4o": {"prompt": 2.5, "completion": 10}, "*": {...}}``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from gip_airflow import api

if TYPE_CHECKING:
    from gip_airflow.hooks.langfuse import LangfuseHook

__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_TOKENS_PER_ITEM",
    "DOWNSAMPLE_HEADROOM",
    "PRICE_TABLE_VARIABLE",
    "Estimate",
    "LimitExceeded",
    "Price",
    "TargetCount",
    "count_targets",
    "fit_limits",
    "parse_price_table",
]

#: Airflow Variable holding a JSON price table (overrides the defaults model by model).
PRICE_TABLE_VARIABLE = "gip_price_table"

#: Tokens per evaluated item (prompt, completion) when the ledger has no history for the evaluator.
DEFAULT_TOKENS_PER_ITEM: tuple[float, float] = (1000.0, 150.0)

#: The share of a limit a downsampled run aims at, leaving room for sampling noise.
DOWNSAMPLE_HEADROOM = 0.9


@dataclasses.dataclass(frozen=True)
class Price:
    """US dollars per million prompt and completion tokens."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


#: List prices of common judge models (USD per million tokens); ``*`` prices any other model.
#: Check them against your contract and override them with the price table.
DEFAULT_PRICES: dict[str, Price] = {
    "openai/gpt-4": Price(30.0, 60.0),
    "openai/gpt-4-turbo": Price(10.0, 30.0),
    "openai/gpt-4o": Price(2.5, 10.0),
    "openai/gpt-4o-mini": Price(0.15, 0.6),
    "anthropic/claude-3-opus-20240229": Price(15.0, 75.0),
    "anthropic/claude-3-sonnet-20240229": Price(3.0, 15.0),
    "anthropic/claude-3-haiku-20240307": Price(0.25, 1.25),
    "*": Price(10.0, 30.0),
}


def parse_price_table(raw: Any, source: str) -> dict[str, Price]:
    """The defaults updated with a price table given as JSON text or a mapping; errors name ``source``."""
    if raw is None or raw == "":
        return dict(DEFAULT_PRICES)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError(f"{source}: the price table is not JSON") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: the price table must be a JSON object of model -> prices")
    table = dict(DEFAULT_PRICES)
    for model, prices in raw.items():
        try:
            prompt, completion = float(prices["prompt"]), float(prices["completion"])
        except (TypeError, KeyError, ValueError):
            raise ValueError(
                f"{source}: model {model!r} needs numeric 'prompt' and 'completion' prices (USD per "
                f'million tokens), e.g. {{"prompt": 2.5, "completion": 10}}'
            ) from None
        if prompt < 0 or completion < 0 or not math.isfinite(prompt + completion):
            raise ValueError(f"{source}: model {model!r} has a negative or non-finite price")
        table[str(model)] = Price(prompt, completion)
    return table


def price_of(table: Mapping[str, Price], model: str | None) -> Price:
    return table.get(model or "") or table.get("*") or DEFAULT_PRICES["*"]


@dataclasses.dataclass(frozen=True)
class TargetCount:
    """Targets matching the experiment's filters, and what sampling and the max count leave of them."""

    matching: int
    sampling_rate: float = 1.0
    max_count: int | None = None
    #: A digest of the dataset items (ids, statuses, update times): the dataset's version.
    version: str | None = None

    @property
    def items(self) -> float:
        expected = self.matching * self.sampling_rate
        return min(expected, float(self.max_count)) if self.max_count else expected


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Expected items, tokens and cost of a run."""

    count: TargetCount
    prompt_per_item: float
    completion_per_item: float
    tokens_source: Literal["history", "default", "configured"]
    judge_model: str | None
    price: Price

    @property
    def items(self) -> float:
        return self.count.items

    @property
    def prompt_tokens(self) -> int:
        return round(self.items * self.prompt_per_item)

    @property
    def completion_tokens(self) -> int:
        return round(self.items * self.completion_per_item)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return self.price.cost(self.prompt_tokens, self.completion_tokens)

    def with_rate(self, rate: float) -> Estimate:
        return dataclasses.replace(self, count=dataclasses.replace(self.count, sampling_rate=rate))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form logged and pushed to XCom (key ``estimate``)."""
        return {
            "matching_targets": self.count.matching,
            "sampling_rate": self.count.sampling_rate,
            "max_count": self.count.max_count,
            "items": round(self.items, 2),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": round(self.cost, 6),
            "judge_model": self.judge_model,
            "tokens_per_item": [round(self.prompt_per_item, 2), round(self.completion_per_item, 2)],
            "tokens_source": self.tokens_source,
            "price_per_million": [self.price.prompt, self.price.completion],
        }

    def describe(self) -> str:
        return (
            f"{self.items:.0f} items ({self.count.matching} matching, "
            f"sampling_rate {self.count.sampling_rate:g}"
            f"{f', max {self.count.max_count}' if self.count.max_count else ''}) x "
            f"{self.prompt_per_item + self.completion_per_item:.0f} tokens ({self.tokens_source}) = "
            f"{self.total_tokens} tokens, ${self.cost:.4f} at {self.judge_model or 'the default price'}"
        )


# ---------------------------------------------------------------------------------------------
# Counting targets
# ---------------------------------------------------------------------------------------------


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _window(flt: Mapping[str, Any], start: str, end: str, now_ms: int) -> tuple[str | None, str | None]:
    relative = flt.get("relative_time_range")
    if relative:  # GIP evaluates it when the run executes: about now
        return _iso(now_ms - int(api.relative_range_seconds(relative) * 1000)), _iso(now_ms)
    return _iso(flt.get(start)), _iso(flt.get(end))


def target_query(
    experiment_type: str, config: Mapping[str, Any], now_ms: int
) -> tuple[str, list[tuple[str, Any]]]:
    """The Langfuse list endpoint and query selecting an experiment's targets (before sampling)."""
    kind = api.ExperimentType(experiment_type)
    if kind == api.ExperimentType.LANGFUSE_DATASET:
        return api.LangfusePaths.dataset_items, [("datasetName", config["dataset_name"])]
    if kind == api.ExperimentType.LANGFUSE_TRACE:
        flt = config.get("trace_filter_request") or {}
        start, end = _window(flt, "from_timestamp", "to_timestamp", now_ms)
        query = [("name", flt.get("name")), ("version", flt.get("version")), ("release", flt.get("release"))]
        query += [("tags", t) for t in flt.get("tags") or ()]
        query += [("fromTimestamp", start), ("toTimestamp", end)]
        return api.LangfusePaths.traces, [(k, v) for k, v in query if v is not None]
    flt = config.get("observation_filter_request") or {}
    start, end = _window(flt, "from_start_time", "to_start_time", now_ms)
    query = [("name", flt.get("name")), ("version", flt.get("version"))]
    query += [("fromStartTime", start), ("toStartTime", end)]
    return api.LangfusePaths.observations, [(k, v) for k, v in query if v is not None]


def count_targets(
    langfuse: LangfuseHook, experiment_type: str, config: Mapping[str, Any], now_ms: int
) -> TargetCount:
    """Count an experiment's targets through the Langfuse API (dataset items are paged to skip archived
    ones and to compute the dataset's version)."""
    path, query = target_query(experiment_type, config, now_ms)
    if path == api.LangfusePaths.dataset_items:
        include_archived = bool(config.get("include_archived_items"))
        digest, matching = hashlib.sha256(), 0
        for page in langfuse.pages(path, query):
            for item in page:
                digest.update(f"{item.get('id')}|{item.get('status')}|{item.get('updatedAt')}\n".encode())
                matching += include_archived or item.get("status") != "ARCHIVED"
        return TargetCount(matching=matching, version=digest.hexdigest()[:16])
    max_key = "max_trace_count" if path == api.LangfusePaths.traces else "max_observation_count"
    return TargetCount(
        matching=langfuse.count(path, query),
        sampling_rate=float(config.get("sampling_rate", 1.0)),
        max_count=config.get(max_key),
    )


# ---------------------------------------------------------------------------------------------
# Per-task limits
# ---------------------------------------------------------------------------------------------


class LimitExceeded(ValueError):
    """The estimate is over ``max_tokens`` or ``max_cost`` and cannot (or may not) be downsampled."""


def _over(estimate: Estimate, max_tokens: float | None, max_cost: float | None) -> list[str]:
    over = []
    if max_tokens is not None and estimate.total_tokens > max_tokens:
        over.append(f"estimated {estimate.total_tokens} tokens exceed max_tokens={max_tokens:g}")
    if max_cost is not None and estimate.cost > max_cost:
        over.append(f"estimated cost ${estimate.cost:.4f} exceeds max_cost=${max_cost:g}")
    return over


def fit_limits(
    estimate: Estimate,
    *,
    max_tokens: float | None,
    max_cost: float | None,
    policy: Literal["fail", "downsample"],
    experiment_type: str,
) -> float | None:
    """None when the estimate fits; with ``downsample``, the lower ``sampling_rate`` that fits.

    Raises :class:`LimitExceeded` naming the estimate and the limit otherwise.
    """
    over = _over(estimate, max_tokens, max_cost)
    if not over:
        return None
    if policy != "downsample":
        raise LimitExceeded("; ".join(over) + " (over_limit='fail')")
    if experiment_type == api.ExperimentType.LANGFUSE_DATASET:
        raise LimitExceeded(
            "; ".join(over)
            + ": a dataset experiment has no sampling_rate to lower (over_limit='downsample'); "
            "raise the limit or evaluate a smaller dataset"
        )
    ratios = []
    if max_tokens is not None and estimate.total_tokens:
        ratios.append(max_tokens / estimate.total_tokens)
    if max_cost is not None and estimate.cost:
        ratios.append(max_cost / estimate.cost)
    allowed_items = estimate.items * min(ratios) * DOWNSAMPLE_HEADROOM
    matching = estimate.count.matching
    rate = math.floor(min(estimate.count.sampling_rate, allowed_items / matching) * 10_000) / 10_000
    if allowed_items < 1 or rate <= 0 or _over(estimate.with_rate(rate), max_tokens, max_cost):
        raise LimitExceeded("; ".join(over) + ": not even one item fits (over_limit='downsample')")
    return rate
