"""Seed data of the emulator: models, Langfuse datasets/traces/observations/scores, preset GIP objects.

A seed is a JSON file (format in docs/emulator.md, "Seed data"). Timestamps may be absolute ISO-8601
(``2025-03-18T09:15:00Z``) or relative to the emulator's start-up (``now``, ``now-P3DT4H``,
``now+PT30M``), so the default data always covers "the last 14 days". Strings in the ``gip`` part
may use ``{emulator_url}``, ``{langfuse_public_key}`` and ``{langfuse_secret_key}``.

The default seed is generated at start-up by :func:`generate_default_seed` (deterministic, so every
emulator serves the same data); ``gip-emulator --dump-seed`` prints it as a starting point for your
own seed file.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gip_airflow.api import format_validation_error

SEED_FORMAT_VERSION = 1

_RELATIVE = re.compile(r"^now(?:\s*([+-])\s*(P\S+))?$", re.IGNORECASE)


class SeedError(ValueError):
    """A seed file that cannot be used; the message names the file, the place and the fix."""


# ---------------------------------------------------------------------------------------------
# Time helpers
# ---------------------------------------------------------------------------------------------


def resolve_time(value: Any, now_ms: int) -> int:
    """Epoch ms of a seed timestamp: ``now``, ``now-P3DT4H`` / ``now+PT30M``, ISO-8601, or epoch ms
    (a number or a string of digits)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a timestamp; use ISO-8601 or 'now-P1DT2H'")
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    match = _RELATIVE.match(text)
    if match:
        sign, duration = match.groups()
        if not duration:
            return now_ms
        try:
            parsed = pendulum.parse(duration)
        except Exception as exc:
            raise ValueError(f"{value!r}: {duration!r} is not an ISO-8601 duration") from exc
        if not isinstance(parsed, pendulum.Duration):
            raise ValueError(f"{value!r}: {duration!r} is not an ISO-8601 duration")
        offset = round(parsed.total_seconds() * 1000)
        return now_ms - offset if sign == "-" else now_ms + offset
    try:
        parsed_dt = pendulum.parse(text)
    except Exception as exc:
        raise ValueError(f"{value!r} is neither ISO-8601 nor 'now-<duration>'") from exc
    if not isinstance(parsed_dt, dt.datetime):
        raise ValueError(f"{value!r} is not a point in time")
    return round(parsed_dt.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    """Langfuse's timestamp format: ``2025-03-18T09:15:00.000Z``."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _ago(seconds: float) -> str:
    """A relative seed timestamp ``now-P…`` for ``seconds`` before start-up."""
    total_ms = round(seconds * 1000)
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    text = "now-P"
    if days:
        text += f"{days}D"
    text += "T" if hours or minutes or secs or ms or not days else ""
    if hours:
        text += f"{hours}H"
    if minutes:
        text += f"{minutes}M"
    if secs or ms:
        text += f"{secs}.{ms:03d}S" if ms else f"{secs}S"
    return text if text != "now-P" else "now"


# ---------------------------------------------------------------------------------------------
# The seed file format (validated on load)
# ---------------------------------------------------------------------------------------------


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")


class SeedModel(_Tolerant):
    seq_id: int
    public_id: str = Field(min_length=1)
    name: str | None = None
    provider: str | None = None
    #: Emulator-only: answer quality of the stand-in model in [0, 1] (not served by the API).
    quality: float | None = Field(default=None, ge=0.0, le=1.0)


class SyntheticItemsSpec(BaseModel):
    """Items generated on demand (item *i* is a pure function of *i*): cheap 100k-item datasets."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0, le=50_000_000)
    archived_every: int = Field(default=0, ge=0)
    source_traces: bool = True


class SeedDatasetItem(_Tolerant):
    id: str = Field(min_length=1)
    status: str = Field(default="ACTIVE", pattern="^(ACTIVE|ARCHIVED)$")
    input: Any = None
    expectedOutput: Any = None
    metadata: Any = None
    sourceTraceId: str | None = None
    sourceObservationId: str | None = None
    createdAt: Any = "now"


class SeedDataset(_Tolerant):
    name: str = Field(min_length=1)
    id: str | None = None
    description: str | None = None
    metadata: Any = None
    createdAt: Any = "now"
    items: list[SeedDatasetItem] = Field(default_factory=list)
    synthetic: SyntheticItemsSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SeedDataset:
        if self.items and self.synthetic:
            raise ValueError("give either 'items' or 'synthetic', not both")
        return self


class SeedTrace(_Tolerant):
    id: str = Field(min_length=1)
    timestamp: Any


class SeedObservation(_Tolerant):
    id: str = Field(min_length=1)
    traceId: str | None = None
    type: str = Field(default="GENERATION", pattern="^(GENERATION|SPAN|EVENT)$")
    startTime: Any


class SeedScore(_Tolerant):
    id: str = Field(min_length=1)
    traceId: str = Field(min_length=1)
    name: str = Field(min_length=1)
    value: float | str
    dataType: str | None = Field(default=None, pattern="^(NUMERIC|CATEGORICAL|BOOLEAN)$")
    timestamp: Any = "now"


class SeedLangfuse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    datasets: list[SeedDataset] = Field(default_factory=list)
    traces: list[SeedTrace] = Field(default_factory=list)
    observations: list[SeedObservation] = Field(default_factory=list)
    scores: list[SeedScore] = Field(default_factory=list)


class SeedGip(BaseModel):
    """Preset GIP objects; each needs an ``id`` and is validated like a client request."""

    model_config = ConfigDict(extra="forbid")

    credentials: list[dict[str, Any]] = Field(default_factory=list)
    experiments: list[dict[str, Any]] = Field(default_factory=list)
    evaluators: list[dict[str, Any]] = Field(default_factory=list)


class SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = SEED_FORMAT_VERSION
    description: str | None = None
    models: list[SeedModel] = Field(default_factory=list)
    langfuse: SeedLangfuse = Field(default_factory=SeedLangfuse)
    gip: SeedGip = Field(default_factory=SeedGip)


# ---------------------------------------------------------------------------------------------
# Resolved seed (what the store loads)
# ---------------------------------------------------------------------------------------------


@dataclass
class SeedData:
    """A seed with every timestamp resolved to epoch ms (plus ISO strings in the records)."""

    models: list[dict[str, Any]]
    datasets: list[dict[str, Any]]  # each: dataset record + "items" (list) or "synthetic" (spec)
    traces: list[dict[str, Any]]
    observations: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    gip: SeedGip = field(default_factory=SeedGip)


def _timed(record: dict[str, Any], keys: tuple[str, ...], now_ms: int, where: str) -> dict[str, Any]:
    """Resolve the timestamp ``keys`` of ``record`` to ISO strings, keeping ``_ms`` copies."""
    out = dict(record)
    for key in keys:
        if out.get(key) is None:
            continue
        try:
            ms = resolve_time(out[key], now_ms)
        except ValueError as exc:
            raise SeedError(f"{where}.{key}: {exc}") from None
        out[key] = iso_ms(ms)
        out[f"_{key}_ms"] = ms
    return out


def load_seed(path: Path | str | None, now_ms: int) -> SeedData:
    """Read and validate a seed file (the generated default seed when ``path`` is None) relative to
    ``now_ms``."""
    if not path:
        return parse_seed(generate_default_seed(), now_ms, "default seed")
    source = Path(path)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeedError(f"seed file {source} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SeedError(f"seed file {source} is not valid JSON: {exc}") from None
    return parse_seed(raw, now_ms, str(source))


def parse_seed(raw: Any, now_ms: int, where: str = "seed") -> SeedData:
    """Validate an already-parsed seed document; see :func:`load_seed`."""
    try:
        seed = SeedFile.model_validate(raw)
    except ValidationError as exc:
        raise SeedError(format_validation_error(exc, f"seed file {where}")) from None
    if seed.version != SEED_FORMAT_VERSION:
        raise SeedError(f"{where}: version {seed.version} is not supported; use {SEED_FORMAT_VERSION}")
    lf = seed.langfuse
    datasets = []
    for i, ds in enumerate(lf.datasets):
        record = _timed(
            ds.model_dump(exclude={"items", "synthetic"}), ("createdAt",), now_ms, f"datasets[{i}]"
        )
        record["items"] = [
            _timed(item.model_dump(), ("createdAt",), now_ms, f"datasets[{i}].items[{j}]")
            for j, item in enumerate(ds.items)
        ]
        record["synthetic"] = ds.synthetic
        datasets.append(record)
    traces = [_timed(t.model_dump(), ("timestamp",), now_ms, f"traces[{i}]") for i, t in enumerate(lf.traces)]
    observations = [
        _timed(o.model_dump(), ("startTime", "endTime", "completionStartTime"), now_ms, f"observations[{i}]")
        for i, o in enumerate(lf.observations)
    ]
    scores = [_timed(s.model_dump(), ("timestamp",), now_ms, f"scores[{i}]") for i, s in enumerate(lf.scores)]
    for kind, records in (("traces", traces), ("observations", observations), ("scores", scores)):
        seen: set[str] = set()
        for rec in records:
            if rec["id"] in seen:
                raise SeedError(f"{where}: duplicate id {rec['id']!r} in langfuse.{kind}")
            seen.add(rec["id"])
    names = [d["name"] for d in datasets]
    if len(set(names)) != len(names):
        raise SeedError(f"{where}: dataset names must be unique")
    models = [m.model_dump(exclude_none=True) for m in seed.models]
    return SeedData(models, datasets, traces, observations, scores, seed.gip)


def substitute(value: Any, mapping: Mapping[str, str]) -> Any:
    """Replace ``{emulator_url}``-style placeholders in every string of a JSON value."""
    if isinstance(value, str):
        for key, replacement in mapping.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [substitute(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, mapping) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# The default seed
# ---------------------------------------------------------------------------------------------

MODELS: list[dict[str, Any]] = [
    {"seq_id": 19, "public_id": "openai/gpt-4", "name": "GPT-4", "provider": "openai", "quality": 0.84},
    {"seq_id": 21, "public_id": "openai/gpt-4o", "name": "GPT-4o", "provider": "openai", "quality": 0.88},
    {
        "seq_id": 22,
        "public_id": "openai/gpt-4o-mini",
        "name": "GPT-4o mini",
        "provider": "openai",
        "quality": 0.7,
    },
    {
        "seq_id": 5,
        "public_id": "anthropic/claude-3-opus-20240229",
        "name": "Claude 3 Opus",
        "provider": "anthropic",
        "quality": 0.9,
    },
    {
        "seq_id": 6,
        "public_id": "anthropic/claude-3-sonnet-20240229",
        "name": "Claude 3 Sonnet",
        "provider": "anthropic",
        "quality": 0.76,
    },
    {
        "seq_id": 7,
        "public_id": "anthropic/claude-3-haiku-20240307",
        "name": "Claude 3 Haiku",
        "provider": "anthropic",
        "quality": 0.62,
    },
    {
        "seq_id": 30,
        "public_id": "google/gemini-1.5-pro",
        "name": "Gemini 1.5 Pro",
        "provider": "google",
        "quality": 0.82,
    },
    {"seq_id": 41, "public_id": "skt/a.x-4.0", "name": "A.X 4.0", "provider": "skt", "quality": 0.8},
]

_PLAN_SYSTEM = (
    "당신은 SK텔레콤 요금제 상담 어시스턴트입니다.\n"
    "- 고객의 사용 패턴(데이터, 통화, 예산)을 먼저 확인하세요.\n"
    "- 추천 요금제는 최대 3개, 월 요금과 핵심 혜택을 함께 알려주세요."
)
_PLAN_QA: list[tuple[str, str]] = [
    (
        "5만원 이하 요금제 추천해줘",
        "월 5만원 이하라면 다음 요금제를 추천드려요.\n"
        "1. 5GX 슬림 (월 55,000원 → 선택약정 시 41,250원): 데이터 11GB\n"
        "2. 0 청년 43 (월 43,000원): 만 34세 이하, 데이터 6GB + 1Mbps\n"
        "두 요금제 모두 통화·문자는 기본 제공됩니다.",
    ),
    (
        "데이터를 한 달에 100GB 넘게 써요. 무제한 요금제 중에 제일 싼 게 뭐예요?",
        "데이터 무제한 중에서는 '5GX 프라임' (월 89,000원)이 가장 저렴합니다.\n"
        "선택약정 25% 할인을 받으면 66,750원이고, 테더링 50GB가 포함돼요.",
    ),
    (
        "부모님 폰 요금제 바꾸려고 하는데, 통화만 많이 하세요. 데이터는 거의 안 쓰시고요.",
        "통화 위주라면 'T 플랜 시니어' (월 33,000원)를 추천드려요.\n- 집/이동전화 무제한\n- 데이터 1.5GB\n"
        "만 65세 이상이면 추가 할인도 받을 수 있어요.",
    ),
    (
        "요금제 바꾸면 위약금 있어요?",
        "요금제 변경 자체에는 위약금이 없습니다. "
        "다만 선택약정 기간 중 해지하면 할인 반환금이 발생할 수 있어요.\n"
        "T world 앱 > 나의 가입정보에서 남은 약정 기간을 확인해 보세요.",
    ),
    (
        'What\'s the cheapest plan with at least 20GB? Budget is "around 50,000 won", not more.',
        "Within about 50,000 won, '5GX 레귤러' gives 24GB for 69,000 won, or 51,750 won with the 25% "
        "selective-contract discount.\n"
        "If you are 34 or younger, '0 청년 59' (59,000 won, 24GB) is an option too.",
    ),
    (
        "가족 결합하면 얼마나 할인돼요? 저, 배우자, 아이 둘 이렇게 4명이에요.",
        "'온가족할인'으로 가입 연수 합산 30년 이상이면 최대 50%까지 할인됩니다.\n"
        "4인 기준 예시:\n- 합산 20~29년: 30% 할인\n- 합산 30년 이상: 50% 할인 (한 회선 기준)",
    ),
    (
        "해외여행 가는데 로밍 요금제 뭐가 좋아요? 일본 5일이에요",
        "일본 5일이면 'baro 3GB' (29,000원, 30일)가 가장 경제적입니다.\n"
        "매일 쓰는 양이 1GB 미만이면 충분해요.",
    ),
]

_SUPPORT_QA: list[tuple[str, str]] = [
    (
        "인터넷이 자꾸 끊겨요. 공유기 재부팅도 해봤는데 그래요.",
        "불편을 드려 죄송합니다. 다음 순서로 확인 부탁드려요.\n1. 공유기 뒷면 WAN 포트 케이블 연결 상태\n"
        "2. 다른 기기에서도 끊기는지\n계속되면 원격 점검을 예약해 드릴게요.",
    ),
    (
        'My bill shows a charge I don\'t recognise: "콘텐츠 이용료 11,000원". What is it?',
        "That line is a content purchase billed through your phone (소액결제). You can see the merchant in "
        "T world > 소액결제 내역, and block future charges in the same menu.",
    ),
    (
        "유심 분실했어요, 어떻게 해야 돼요?",
        "즉시 분실 신고를 해주세요: T world 앱 > 분실/파손 > 분실신고.\n"
        "가까운 대리점에서 신분증을 지참하시면 유심을 재발급받을 수 있습니다 (7,700원).",
    ),
    (
        "명의 변경하려면 뭐가 필요해요?",
        "양도인과 양수인 모두의 신분증이 필요하고, 대리점 방문 또는 T world 온라인 신청이 가능합니다.",
    ),
    (
        "Can I keep my number if I switch to an MVNO?",
        "Yes. Number portability (번호이동) lets you keep your number; the new carrier handles the request.\n"
        "Check any remaining contract discount first, "
        "since ending it early may cost a refund of the discount.",
    ),
]

_TRANSLATE: list[tuple[str, str]] = [
    ("이번 달 데이터 사용량이 90%를 넘었습니다.", "You have used more than 90% of this month's data."),
    (
        "고객님의 소중한 의견 감사합니다. 더 나은 서비스로 보답하겠습니다.",
        "Thank you for your valuable feedback. We will repay it with better service.",
    ),
    ("요금 납부일은 매월 25일입니다.", "Your bill is due on the 25th of every month."),
    ('"5G 커버리지"는 지역마다 다를 수 있습니다.', '"5G coverage" may differ by region.'),
]

_RAG_QA: list[tuple[str, str]] = [
    (
        "What is the refund policy for devices returned within 14 days?",
        "Devices returned within 14 days in their original condition get a full refund; opened devices "
        "are refunded minus a 10% restocking fee.",
    ),
    (
        "How many family lines can share one data plan?",
        "Up to 5 lines can share the data of the main plan; each extra line costs 11,000 won per month.",
    ),
    (
        "Does the premium plan include international calls?",
        "No. International calls are billed separately, except 100 minutes per month to 10 listed countries.",
    ),
]

_CALL_LINES = [
    "상담원: 안녕하세요, SK텔레콤 고객센터 김민지입니다. 무엇을 도와드릴까요?",
    "고객: 네, 지난달 요금이 평소보다 3만원 정도 더 나와서요. 확인 좀 해주세요.",
    "상담원: 네, 본인 확인 후 바로 확인해 드리겠습니다. 생년월일 말씀해 주시겠어요?",
    "고객: 1985년 3월 2일이요.",
    "상담원: 확인되었습니다. 지난달에 해외 로밍 데이터 사용료 28,600원이 청구되었어요.",
    "고객: 아, 출장 갔을 때요? 로밍 요금제 가입했었는데요.",
    "상담원: 요금제 기간이 3일이었는데 5일간 사용하셔서 나머지 2일이 종량제로 과금되었습니다.",
    "고객: 그럼 환불은 안 되는 건가요?",
    "상담원: 이번 한 번은 50% 감면 처리해 드릴 수 있어요. 다음 달 요금에서 차감됩니다.",
    "고객: 네, 그렇게 해주세요. 감사합니다.",
    "상담원: 추가로 궁금하신 점 있으실까요? 좋은 하루 보내세요.",
]

_TRACE_KINDS: list[dict[str, Any]] = [
    {"name": "plan-suggestion", "tags": [["prod", "plan"], ["prod", "plan", "ko"], ["staging", "plan"]]},
    {
        "name": "customer-support",
        "tags": [["prod", "support"], ["prod", "support", "ko"], ["staging", "support"]],
    },
    {"name": "call-summary", "tags": [["prod", "summary", "long-context"], ["batch", "summary"]]},
    {"name": "translate-ko-en", "tags": [["prod", "translate"], ["staging", "translate"]]},
    {"name": "rag-answer", "tags": [["prod", "rag"], ["prod", "rag", "en"]]},
    {"name": "plan-suggestion", "tags": [["prod", "plan", "ko"], ["canary", "plan"]]},
]
_VERSIONS = ["v1", "v2", "v2", "v3"]
_RELEASES = ["2025.03.1", "2025.03.2", "2025.04.0"]
_GEN_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-sonnet-20240229", "a.x-4.0"]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _call_transcript(rng: random.Random, repeats: int) -> str:
    lines: list[str] = []
    for r in range(repeats):
        lines.append(f"[통화 구간 {r + 1}]")
        lines.extend(_CALL_LINES[: rng.randint(6, len(_CALL_LINES))])
    return "\n".join(lines)


def _io_for(kind: str, rng: random.Random, serial: int) -> tuple[Any, Any, dict[str, Any]]:
    """Input, output and metadata of one trace of ``kind``."""
    if kind == "plan-suggestion":
        question, answer = _PLAN_QA[serial % len(_PLAN_QA)]
        messages = [{"role": "system", "content": _PLAN_SYSTEM}, {"role": "user", "content": question}]
        lang = "en" if question.isascii() else "ko"
        return messages, {"role": "assistant", "content": answer}, {"lang": lang, "channel": "app"}
    if kind == "customer-support":
        question, answer = _SUPPORT_QA[serial % len(_SUPPORT_QA)]
        lang = "en" if question.isascii() or question.startswith(("My", "Can")) else "ko"
        return (
            [{"role": "user", "content": question}],
            {"role": "assistant", "content": answer},
            {"lang": lang},
        )
    if kind == "call-summary":
        transcript = _call_transcript(rng, 20 if serial % 4 == 1 else rng.randint(2, 6))
        prompt = "다음 상담 통화를 3줄로 요약하세요.\n\n" + transcript
        summary = (
            "1. 고객이 지난달 요금 증가(약 3만원) 문의\n2. 원인: 로밍 요금제 기간 초과로 2일 종량제 과금\n"
            "3. 1회 50% 감면, 다음 달 요금에서 차감"
        )
        return (
            [{"role": "user", "content": prompt}],
            {"role": "assistant", "content": summary},
            {"lang": "ko"},
        )
    if kind == "translate-ko-en":
        source, target = _TRANSLATE[serial % len(_TRANSLATE)]
        return (
            [
                {"role": "system", "content": "Translate Korean to English."},
                {"role": "user", "content": source},
            ],
            {"role": "assistant", "content": target},
            {"lang": "ko", "target_lang": "en"},
        )
    question, answer = _RAG_QA[serial % len(_RAG_QA)]
    context = "\n\n".join(
        f"[doc {d}] Policy section {d}: devices, plans, family lines, refunds, roaming, international calls. "
        * rng.randint(2, 5)
        for d in range(1, rng.randint(3, 7))
    )
    messages = [
        {"role": "system", "content": "Answer only from the documents below.\n\n" + context},
        {"role": "user", "content": question},
    ]
    return messages, {"role": "assistant", "content": answer}, {"lang": "en", "retriever": "bm25"}


def generate_default_seed() -> dict[str, Any]:
    """The default seed document: 14 days of traces, datasets and preset GIP objects (deterministic)."""
    rng = random.Random(20250318)
    traces: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    hours = [1.2, 4.7, 8.1, 11.5, 15.3, 19.9]
    serial_by_kind: dict[str, int] = {}
    for day in range(14):
        for slot, hour in enumerate(hours):
            kind = _TRACE_KINDS[(day + slot) % len(_TRACE_KINDS)]
            name = kind["name"]
            serial = serial_by_kind.get(name, 0)
            serial_by_kind[name] = serial + 1
            ago = day * 86_400 + hour * 3600 + rng.randint(0, 1800)
            trace_id = _uuid(rng)
            inp, out, meta = _io_for(name, rng, serial)
            latency = round(rng.uniform(0.6, 4.5), 3)
            version = _VERSIONS[(day * 7 + slot) % len(_VERSIONS)]
            release = _RELEASES[min(day // 5, len(_RELEASES) - 1)] if name != "rag-answer" else None
            span_id = _uuid(rng)
            gen_id = _uuid(rng)
            observations.append(
                {
                    "id": span_id,
                    "traceId": trace_id,
                    "type": "SPAN",
                    "name": "pipeline",
                    "startTime": _ago(ago),
                    "endTime": _ago(ago - latency),
                    "input": {"steps": ["retrieve", "generate"] if name == "rag-answer" else ["generate"]},
                    "output": {"ok": True},
                    "metadata": None,
                    "version": version,
                    "level": "DEFAULT",
                    "parentObservationId": None,
                }
            )
            model = _GEN_MODELS[(day + slot) % len(_GEN_MODELS)]
            usage_in = len(json.dumps(inp, ensure_ascii=False)) // 3
            usage_out = len(json.dumps(out, ensure_ascii=False)) // 3
            observations.append(
                {
                    "id": gen_id,
                    "traceId": trace_id,
                    "type": "GENERATION",
                    "name": "llm-call",
                    "startTime": _ago(ago - 0.2),
                    "endTime": _ago(ago - latency + 0.1),
                    "completionStartTime": _ago(ago - 0.6),
                    "model": model,
                    "modelParameters": {"temperature": "0.2", "max_tokens": 512},
                    "input": inp,
                    "output": out,
                    "metadata": {"provider": model.split("-")[0]},
                    "version": version,
                    "level": "WARNING" if slot == 5 and day % 3 == 0 else "DEFAULT",
                    "statusMessage": "slow response" if slot == 5 and day % 3 == 0 else None,
                    "parentObservationId": span_id,
                    "usageDetails": {"input": usage_in, "output": usage_out, "total": usage_in + usage_out},
                    "costDetails": {"total": round((usage_in + usage_out) * 0.000005, 6)},
                }
            )
            obs_ids = [span_id, gen_id]
            if name == "rag-answer" or (name == "customer-support" and day % 2 == 0):
                event_id = _uuid(rng)
                observations.append(
                    {
                        "id": event_id,
                        "traceId": trace_id,
                        "type": "EVENT",
                        "name": "retrieval" if name == "rag-answer" else "guardrail-check",
                        "startTime": _ago(ago - 0.1),
                        "input": {"query": inp[-1]["content"]},
                        "output": {"hits": rng.randint(0, 8)} if name == "rag-answer" else {"blocked": False},
                        "version": version,
                        "level": "DEFAULT",
                        "parentObservationId": span_id,
                    }
                )
                obs_ids.append(event_id)
            traces.append(
                {
                    "id": trace_id,
                    "timestamp": _ago(ago),
                    "name": name,
                    "input": inp,
                    "output": out,
                    "sessionId": f"session-{(day * 6 + slot) // 3:03d}",
                    "release": release,
                    "version": version,
                    "userId": f"u-{rng.randint(1, 40):02d}",
                    "metadata": meta,
                    "tags": kind["tags"][(day + serial) % len(kind["tags"])],
                    "public": False,
                    "environment": "default" if "staging" not in kind["tags"][0] else "staging",
                    "latency": latency,
                    "totalCost": round(rng.uniform(0.0005, 0.02), 5),
                }
            )
    by_name: dict[str, list[dict[str, Any]]] = {}
    for t in traces:
        by_name.setdefault(t["name"], []).append(t)
    gen_by_trace = {o["traceId"]: o["id"] for o in observations if o["type"] == "GENERATION"}

    plan_items = []
    for i, trace in enumerate(by_name["plan-suggestion"][:24]):
        item: dict[str, Any] = {
            "id": _uuid(rng),
            "status": "ARCHIVED" if i in (3, 11, 19) else "ACTIVE",
            "input": trace["input"][1:],
            "expectedOutput": trace["output"],
            "metadata": {
                "lang": trace["metadata"]["lang"],
                "category": "plan",
                "difficulty": ["easy", "hard"][i % 2],
            },
            "sourceTraceId": trace["id"],
            "sourceObservationId": None,
            "createdAt": _ago(15 * 86_400 - i * 600),
        }
        if i in (5, 17):  # linked to the generation only (score sync must look its trace up)
            item["sourceTraceId"] = None
            item["sourceObservationId"] = gen_by_trace[trace["id"]]
        plan_items.append(item)

    qa_pairs = [
        ("Is a fox a member of the dog family?", "Yes. Foxes belong to the family Canidae."),
        ("What is the boiling point of water at sea level in Celsius?", "100 °C."),
        ("Who wrote 'Pride and Prejudice'?", "Jane Austen, published in 1813."),
        ("What is 17 x 23?", "391"),
        ("Name the largest planet in the solar system.", "Jupiter."),
        ("Translate 'thank you' into Korean.", "감사합니다 (gamsahamnida)."),
        (
            "Is the Great Wall of China visible from space with the naked eye?",
            "No, not from low Earth orbit.",
        ),
        ("What does HTTP status 429 mean?", "Too Many Requests: the client is being rate limited."),
        ("How many minutes are in a day?", "1,440 minutes."),
        ("What is the chemical symbol for gold?", "Au."),
        ("Which ocean is the largest?", "The Pacific Ocean."),
        ("Explain, in one line, what a CSV file is.", 'A text file of comma-separated values, e.g. "a,b,c".'),
        ("What is the capital of Australia?", "Canberra."),
        ("서울의 인구는 대략 몇 명인가요?", "약 940만 명입니다 (2024년 기준)."),
        ("Is 2025 a leap year?", "No; the next leap year is 2028."),
        ("What language is mainly spoken in Brazil?", "Portuguese."),
    ]
    qa_items = []
    for i, (question, answer) in enumerate(qa_pairs):
        qa_items.append(
            {
                "id": _uuid(rng),
                "status": "ARCHIVED" if i in (6, 14) else "ACTIVE",
                "input": [{"role": "user", "content": question}],
                "expectedOutput": None if i == 9 else {"role": "assistant", "content": answer},
                "metadata": None if i in (2, 12) else {"lang": "ko" if not question.isascii() else "en"},
                "sourceTraceId": None,
                "sourceObservationId": None,
                "createdAt": _ago(10 * 86_400 - i * 60),
            }
        )

    call_items = []
    for i, trace in enumerate(by_name["call-summary"][:6]):
        call_items.append(
            {
                "id": _uuid(rng),
                "status": "ACTIVE",
                "input": trace["input"],
                "expectedOutput": trace["output"],
                "metadata": {"lang": "ko", "length": len(trace["input"][0]["content"])},
                "sourceTraceId": trace["id"],
                "sourceObservationId": None,
                "createdAt": _ago(5 * 86_400 - i * 60),
            }
        )

    datasets = [
        {
            "name": "JSONL_samples-plan_suggestion_dataset_v2",
            "description": "요금제 추천 응답 샘플 (source traces linked; 3 archived)",
            "metadata": {"owner": "plan-team"},
            "createdAt": _ago(16 * 86_400),
            "items": plan_items,
        },
        {
            "name": "qa-general-knowledge",
            "description": "Short general-knowledge QA pairs without source traces",
            "metadata": None,
            "createdAt": _ago(11 * 86_400),
            "items": qa_items,
        },
        {
            "name": "call-summary-long",
            "description": "긴 상담 통화 요약 (multi-line, long inputs)",
            "metadata": {"owner": "cs-team"},
            "createdAt": _ago(6 * 86_400),
            "items": call_items,
        },
        {
            "name": "plan suggestion v3",
            "description": "A name with spaces: Langfuse allows it, GIP does not",
            "createdAt": _ago(2 * 86_400),
            "items": [dict(item, id=_uuid(rng)) for item in plan_items[:3]],
        },
        {
            "name": "synthetic-chat-100k",
            "description": "100,000 generated chat items (generated on demand; for load tests)",
            "createdAt": _ago(1 * 86_400),
            "synthetic": {"count": 100_000, "archived_every": 50, "source_traces": True},
        },
    ]
    scores = []
    for i, trace in enumerate(traces[::7]):
        scores.append(
            {
                "id": _uuid(rng),
                "traceId": trace["id"],
                "name": "user-feedback",
                "value": float(i % 3 != 0),
                "dataType": "BOOLEAN",
                "stringValue": "True" if i % 3 != 0 else "False",
                "source": "ANNOTATION",
                "comment": "👍" if i % 3 != 0 else "답변이 부정확함",
                "timestamp": trace["timestamp"],
            }
        )
    return {
        "version": SEED_FORMAT_VERSION,
        "description": "Default seed of the GIP emulator: 14 days of traces relative to start-up.",
        "models": MODELS,
        "langfuse": {"datasets": datasets, "traces": traces, "observations": observations, "scores": scores},
        "gip": {
            "credentials": [
                {
                    "id": "0195a8c0-0000-7000-8000-000000000001",
                    "service_name": "LANGFUSE",
                    "alias": "emulator-langfuse",
                    "base_url": "{emulator_url}",
                    "public_key": "{langfuse_public_key}",
                    "private_key": "{langfuse_secret_key}",
                }
            ],
            "experiments": [
                {
                    "id": "0195a8c0-0000-7000-8000-000000000002",
                    "name": "seed: plan suggestion dataset",
                    "description": "Preset experiment over the seeded plan-suggestion dataset",
                    "type": "langfuse_dataset",
                    "config": {
                        "integrated_service_credential_id": "0195a8c0-0000-7000-8000-000000000001",
                        "dataset_name": "JSONL_samples-plan_suggestion_dataset_v2",
                        "include_archived_items": False,
                    },
                }
            ],
            "evaluators": [
                {
                    "id": "0195a8c0-0000-7000-8000-000000000003",
                    "name": "seed: category judge",
                    "type": "llm_judge",
                    "metric": {
                        "type": "category",
                        "config": [
                            {"index": 0, "name": "bad"},
                            {"index": 1, "name": "neutral"},
                            {"index": 2, "name": "good"},
                        ],
                    },
                    "evaluation_config": {
                        "judge_model_seq_id": 19,
                        "judge_model_public_id": "openai/gpt-4",
                        "judge_model_parameters": {"top_p": 0.5, "temperature": 0.5, "max_tokens": 50},
                        "judge_prompt": "You are an impartial AI judge. "
                        "Rate the output as bad, neutral or good.\n"
                        "<rationale>...</rationale>\n<rating>...</rating>",
                    },
                }
            ],
        },
    }


def dumps_seed(document: Mapping[str, Any]) -> str:
    """Seed JSON with one record per line: readable as a format example, yet compact."""

    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{"]
    for i, (key, value) in enumerate(document.items()):
        tail = "," if i < len(document) - 1 else ""
        if isinstance(value, Mapping):
            lines.append(f" {one(key)}: {{")
            for j, (sub, records) in enumerate(value.items()):
                sub_tail = "," if j < len(value) - 1 else ""
                if isinstance(records, list) and records:
                    lines.append(f"  {one(sub)}: [")
                    lines.extend(
                        f"   {one(r)}{',' if k < len(records) - 1 else ''}" for k, r in enumerate(records)
                    )
                    lines.append(f"  ]{sub_tail}")
                else:
                    lines.append(f"  {one(sub)}: {one(records)}{sub_tail}")
            lines.append(f" }}{tail}")
        elif isinstance(value, list) and value:
            lines.append(f" {one(key)}: [")
            lines.extend(f"  {one(r)}{',' if k < len(value) - 1 else ''}" for k, r in enumerate(value))
            lines.append(f" ]{tail}")
        else:
            lines.append(f" {one(key)}: {one(value)}{tail}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dumps_default_seed() -> str:
    """The default seed as seed-file JSON text (what ``gip-emulator --dump-seed`` prints)."""
    return dumps_seed(generate_default_seed())


def main() -> None:
    """Print the default seed (a starting point for your own seed file)."""
    sys.stdout.write(dumps_default_seed())


if __name__ == "__main__":
    main()
