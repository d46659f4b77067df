"""A deterministic stand-in for GIP's models: output re-generation and the LLM judge.

Nothing here calls a model. Every "answer" is a pure function of its inputs (hashes, not random
numbers), so the same run over the same data gives the same CSV bytes, while a stronger model
(by the seed's ``quality`` table) gets visibly better scores than a weaker one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gip_airflow.api import ExperimentType, MetricType
from gip_airflow_emulator.synthetic import unit

if TYPE_CHECKING:
    from collections.abc import Sequence

#: The Langfuse object each experiment type feeds into ``{item.<field>}`` placeholders. [doc]
SOURCE_OBJECT = {
    ExperimentType.LANGFUSE_DATASET: "DatasetItem",
    ExperimentType.LANGFUSE_TRACE: "TraceWithDetails",
    ExperimentType.LANGFUSE_OBSERVATION: "ObservationsView",
}
#: Which fields of the source object hold the evaluated input and output.
SOURCE_FIELDS = {
    ExperimentType.LANGFUSE_DATASET: ("input", "expectedOutput"),
    ExperimentType.LANGFUSE_TRACE: ("input", "output"),
    ExperimentType.LANGFUSE_OBSERVATION: ("input", "output"),
}

_PLACEHOLDER = re.compile(r"\{item((?:\.[A-Za-z0-9_]+)*)\}")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


class TemplateError(ValueError):
    """A placeholder that names a field the source object does not have."""


def as_text(value: Any) -> str:
    """How a JSON value appears in a CSV cell or a rendered prompt: strings as-is, others as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def lookup(item: Any, path: str, object_name: str) -> Any:
    """The value at dotted ``path`` (dict keys, list indices) or :class:`TemplateError`."""
    value = item
    walked = "item"
    for part in path.split(".") if path else ():
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            shown = "null" if value is None else type(value).__name__
            raise TemplateError(
                f"target_data_converter template: {{item.{path}}} cannot be rendered: {walked} "
                f"({shown}) of this {object_name} has no field {part!r}"
            )
        walked += "." + part
    return value


def render(template: str, item: dict[str, Any], object_name: str) -> str:
    """Fill ``{item.<field>}`` placeholders (nested with dots); other braces are left alone."""
    return _PLACEHOLDER.sub(lambda m: as_text(lookup(item, m.group(1)[1:], object_name)), template)


def tokens(text: str) -> int:
    """A rough token count (UTF-8 bytes / 4), enough for realistic usage totals."""
    return len(text.encode("utf-8")) // 4 + 1


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return as_text(message.get("content"))
    return as_text(messages)


def _message_text(value: Any) -> str:
    """The readable text of an output: a message's content, the last message's, or the value itself."""
    if isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, dict) and "content" in value:
        return as_text(value["content"])
    return as_text(value)


def _snippet(text: str, length: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


@dataclass(frozen=True)
class Degradation:
    """A judge regression switched on through the control API: more failed items, shifted scores.

    Applies to runs created in ``[from_ms, until_ms)`` whose judge or re-generating model is ``model``
    (any model when None). ``fail_rate``: extra share of items that fail; ``score_shift``: added to
    the judged quality (in [0, 1] units: -0.2 moves a 0-1 numeric score down by 0.2).
    """

    model: str | None = None
    fail_rate: float = 0.0
    score_shift: float = 0.0
    from_ms: int = 0
    until_ms: int | None = None

    def applies(self, created_ms: int, models: Sequence[str | None]) -> bool:
        in_time = created_ms >= self.from_ms and (self.until_ms is None or created_ms < self.until_ms)
        return in_time and (self.model is None or self.model in models)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fail_rate": self.fail_rate,
            "score_shift": self.score_shift,
            "from_ms": self.from_ms,
            "until_ms": self.until_ms,
        }


@dataclass
class ItemResult:
    """One CSV row plus what score sync and the usage totals need."""

    values: list[str]
    passed: bool
    score: Any  # category name, float, or bool; None when not passed
    rationale: str
    prompt_tokens: int
    completion_tokens: int


class Judge:
    """Evaluates source objects for one run: optional re-generation, then the judge."""

    def __init__(
        self,
        kind: str,
        evaluator: dict[str, Any],
        converter: dict[str, Any] | None,
        model_quality: dict[str, float],
        *,
        degradations: Sequence[Degradation] = (),
        created_ms: int = 0,
    ) -> None:
        self.kind = ExperimentType(kind)
        self.object_name = SOURCE_OBJECT[self.kind]
        self.input_field, self.output_field = SOURCE_FIELDS[self.kind]
        self.metric = evaluator["metric"]
        config = evaluator["evaluation_config"]
        self.judge_model = config["judge_model_public_id"]
        self.judge_prompt_tokens = tokens(config["judge_prompt"])
        judge_params = config.get("judge_model_parameters") or {}
        judge_quality = self._quality(model_quality, self.judge_model)
        self.judge_noise = (1.0 - judge_quality) * 0.3 + float(judge_params.get("temperature") or 0.0) * 0.1
        self.converter = converter
        if converter:
            self.model = converter["model_public_id"]
            self.model_quality = self._quality(model_quality, self.model)
            params = converter.get("model_parameters") or {}
            self.temperature = float(params.get("temperature") or 0.0)
            max_tokens = params.get("max_tokens")
            self.max_chars = int(max_tokens) * 4 if max_tokens else None
            self.messages = converter["input_prompt_trajectory_template"]["messages"]
        models = (self.judge_model, converter["model_public_id"] if converter else None)
        active = [d for d in degradations if d.applies(created_ms, models)]
        self.fail_rate = min(1.0, sum(d.fail_rate for d in active))
        self.score_shift = sum(d.score_shift for d in active)
        if self.metric["type"] == MetricType.CATEGORY:
            self.categories = [c["name"] for c in sorted(self.metric["config"], key=lambda c: c["index"])]
        elif self.metric["type"] == MetricType.NUMERIC:
            self.low = float(self.metric["config"]["min"]["value"])
            self.high = float(self.metric["config"]["max"]["value"])

    @staticmethod
    def _quality(table: dict[str, float], model: str) -> float:
        if model in table:
            return table[model]
        return 0.45 + 0.35 * unit("model-quality", model)

    # -- re-generation ---------------------------------------------------------------------------

    def _generate(self, messages: list[dict[str, Any]], target_id: str) -> tuple[str, float]:
        """The stand-in model's answer to ``messages`` and its hidden quality in [0, 1]."""
        noise = (unit("generate", self.model, target_id) - 0.5) * (0.2 + 0.3 * self.temperature)
        quality = min(1.0, max(0.0, self.model_quality + noise))
        question = _last_user_text(messages)
        topic = _snippet(question)
        korean = bool(_HANGUL.search(question))
        if quality >= 0.75:
            text = (
                f"'{topic}'에 대해 답변드릴게요.\n"
                "1. 핵심: 조건을 확인한 뒤 가장 알맞은 선택지를 안내합니다.\n"
                "2. 근거: 요금, 제공량, 할인 조건을 함께 비교했습니다.\n"
                "3. 참고: 자세한 내용은 T world에서 확인하세요."
                if korean
                else f'Here is a complete answer to "{topic}":\n1. The direct answer, stated first.\n'
                f"2. Why: the relevant facts, with numbers.\n3. What to check next, if anything."
            )
        elif quality >= 0.5:
            text = (
                f"'{topic}' 관련해서는 기본 조건만 확인하시면 됩니다. 자세한 설명은 생략할게요."
                if korean
                else f'Short answer to "{topic}": it depends on your plan, but usually yes.'
            )
        else:
            text = (
                "잘 모르겠습니다. 고객센터에 문의해 보세요."
                if korean
                else "I'm not sure; please ask support."
            )
        text = f"[{self.model}] {text}"
        if self.max_chars is not None and len(text) > self.max_chars:
            text = text[: self.max_chars]
        return text, quality

    # -- judging ---------------------------------------------------------------------------------

    def _rating(self, quality: float) -> tuple[Any, str]:
        """The metric's value for ``quality`` and how it reads in the CSV ``score`` column."""
        kind = self.metric["type"]
        if kind == MetricType.CATEGORY:
            name = self.categories[min(len(self.categories) - 1, int(quality * len(self.categories)))]
            return name, name
        if kind == MetricType.NUMERIC:
            value = round(self.low + quality * (self.high - self.low), 2)
            return value, repr(value)
        verdict = quality >= 0.5
        return verdict, "true" if verdict else "false"

    @staticmethod
    def _rationale(quality: float, output: str, korean: bool) -> str:
        topic = _snippet(output, 32)
        if korean:
            verdict = (
                "정확합니다"
                if quality >= 0.66
                else "부분적으로 정확합니다"
                if quality >= 0.4
                else "부정확합니다"
            )
            detail = "근거와 수치를 함께 제시했습니다" if quality >= 0.66 else "근거 설명이 부족합니다"
            return f'- **정확성**: {verdict}. 답변: "{topic}"\n- **설명**: {detail}.'
        verdict = "Correct" if quality >= 0.66 else "Partly correct" if quality >= 0.4 else "Incorrect"
        detail = (
            "The output explains its answer, with numbers."
            if quality >= 0.66
            else "The output gives little or no justification, so it cannot be checked."
        )
        return f'- **Accuracy**: {verdict}. The output says "{topic}".\n- **Explanation:** {detail}'

    def evaluate(self, target: dict[str, Any]) -> ItemResult:
        """Evaluate one source object into a result row."""
        target_id = str(target.get("id"))
        source_in = as_text(target.get(self.input_field))
        source_out = as_text(target.get(self.output_field))
        prompt = completion = 0
        run_in, run_out = source_in, source_out
        shown_out = _message_text(target.get(self.output_field))
        if self.converter:
            try:
                messages = [
                    {**m, "content": render(m["content"], target, self.object_name)} for m in self.messages
                ]
            except TemplateError as exc:
                return ItemResult(
                    [source_in, "", source_out, "", "false", str(exc), "", ""], False, None, "", 0, 0
                )
            answer, quality = self._generate(messages, target_id)
            run_in = json.dumps(messages, ensure_ascii=False)
            run_out = json.dumps({"role": "assistant", "content": answer}, ensure_ascii=False)
            shown_out = answer
            prompt, completion = tokens(run_in), tokens(answer)
        else:
            quality = 0.3 + 0.65 * unit("output-quality", source_out)
            if len(source_out) < 8:
                quality *= 0.6
        if not run_out.strip():
            error = f"the {self.object_name}'s {self.output_field} is empty; there is nothing to judge"
            return ItemResult(
                [source_in, run_in, source_out, run_out, "false", error, "", ""], False, None, "", 0, 0
            )
        prompt += self.judge_prompt_tokens + tokens(run_in) + tokens(run_out) + 12
        if unit("judge-format", self.judge_model, target_id, run_out) < 0.02:
            error = f"judge answer had no <rating> block ({self.judge_model} answered free text)"
            completion += 40
            row = [source_in, run_in, source_out, run_out, "false", error, "", ""]
            return ItemResult(row, False, None, "", prompt, completion)
        if self.fail_rate and unit("degraded", self.judge_model, target_id, run_out) < self.fail_rate:
            error = f"judge answer had no <rating> block ({self.judge_model} is degraded)"
            completion += 40
            row = [source_in, run_in, source_out, run_out, "false", error, "", ""]
            return ItemResult(row, False, None, "", prompt, completion)
        judged = quality + (unit("judge", self.judge_model, target_id, run_out) - 0.5) * self.judge_noise
        judged = min(0.999, max(0.0, judged + self.score_shift))
        value, shown = self._rating(judged)
        rationale = self._rationale(judged, shown_out, bool(_HANGUL.search(run_in)))
        completion += tokens(rationale) + 4
        row = [source_in, run_in, source_out, run_out, "true", "", shown, rationale]
        return ItemResult(row, True, value, rationale, prompt, completion)
