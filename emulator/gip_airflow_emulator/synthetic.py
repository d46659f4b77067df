"""Generated data at scale, in constant memory: lazy dataset items and synthetic result CSVs.

Item *i* of a synthetic dataset and row *i* of a synthetic CSV are pure functions of *i*, so a
100,000-item dataset costs nothing until a page of it is read, and a 1M-row CSV is produced while
it streams. The content is realistic on purpose: chat-message JSON, Korean, embedded newlines,
commas and double quotes, so CSV readers are exercised the way real GIP output exercises them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

from gip_airflow.api import RESULT_CSV_COLUMNS
from gip_airflow_emulator.seed import SyntheticItemsSpec, iso_ms

_QUESTIONS = [
    "5만원 이하 요금제 추천해줘",
    'What does "unlimited" mean on the 5GX Prime plan, exactly?',
    "해외 로밍 요금제, 일본 5일 기준으로 알려줘.\n데이터는 하루 1GB 정도 써요.",
    "Summarise this call:\n상담원: 안녕하세요.\n고객: 요금이 많이 나왔어요, 확인해 주세요.",
    "Can I keep my number, and my family discount, if I switch plans?",
    "가족 결합 할인, 4명이면 얼마나 돼요?",
    "Translate to English: 이번 달 데이터 사용량이 90%를 넘었습니다.",
    "List three plans under 60,000 won, with data caps, comma-separated.",
]
_ANSWERS = [
    "월 5만원 이하라면 '0 청년 43'(43,000원, 6GB)을 추천드려요.",
    'It means no hard cap: after 100GB speed drops to 5Mbps, so "unlimited" still works for video.',
    "일본 5일이면 'baro 3GB'(29,000원)가 가장 경제적입니다.\n하루 1GB 미만이면 충분해요.",
    "1. 요금 증가 문의\n2. 원인: 로밍 초과 과금\n3. 50% 감면 처리",
    "Yes to both: the number stays, and the family discount follows the line, not the plan.",
    "합산 가입 연수 30년 이상이면 최대 50% 할인됩니다.",
    "You have used more than 90% of this month's data.",
    "5GX 슬림, 11GB; 0 청년 43, 6GB; T 플랜 세이브, 5GB",
]
_RATIONALES = [
    "- **Accuracy**: Correct. The plan and price match the catalogue.\n- **Explanation:** Gives the price, "
    'the data cap and one alternative; "concise, complete".',
    "- **정확성**: 정확합니다. 요금과 데이터 제공량이 맞습니다.\n"
    "- **설명**: 근거가 짧지만, 핵심은 모두 포함했습니다.",
    "- **Accuracy**: Partly correct, the discount rate is right but the condition (30 years) is missing.\n"
    "- **Explanation:** No justification, so the user cannot check it.",
    '- **정확성**: 부정확합니다. 요청한 "3개" 대신 2개만 제시했습니다.\n'
    "- **설명**: 쉼표로 구분된 목록 형식은 지켰습니다.",
]
_CATEGORIES = ["good", "neutral", "bad"]


def _digest(*parts: object) -> int:
    """A stable 64-bit number from ``parts`` (the emulator's only source of variation)."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def unit(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts``."""
    return _digest(*parts) / 2**64


class SyntheticItems(Sequence[dict[str, Any]]):
    """The items of a synthetic Langfuse dataset, generated on demand from their index."""

    def __init__(
        self,
        dataset_id: str,
        dataset_name: str,
        spec: SyntheticItemsSpec,
        source_trace_ids: Sequence[str],
        created_ms: int,
    ) -> None:
        self.dataset_id = dataset_id
        self.dataset_name = dataset_name
        self.spec = spec
        self._traces = list(source_trace_ids) if spec.source_traces else []
        self._created_ms = created_ms

    def __len__(self) -> int:
        return self.spec.count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._item(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._item(i) for i in range(len(self)))

    def _item(self, i: int) -> dict[str, Any]:
        q = i % len(_QUESTIONS)
        lang = "en" if _QUESTIONS[q].isascii() else "ko"
        archived = (
            bool(self.spec.archived_every) and i % self.spec.archived_every == self.spec.archived_every - 1
        )
        stamp = iso_ms(self._created_ms + i)
        return {
            "id": f"{self.dataset_id[:8]}-item-{i:08d}",
            "status": "ARCHIVED" if archived else "ACTIVE",
            "input": [{"role": "user", "content": f"{_QUESTIONS[q]} (#{i})"}],
            "expectedOutput": {"role": "assistant", "content": _ANSWERS[(q + i // 7) % len(_ANSWERS)]},
            "metadata": {"lang": lang, "index": i},
            "sourceTraceId": self._traces[i % len(self._traces)] if self._traces else None,
            "sourceObservationId": None,
            "datasetId": self.dataset_id,
            "datasetName": self.dataset_name,
            "createdAt": stamp,
            "updatedAt": stamp,
        }


def csv_line(values: Sequence[str]) -> str:
    """One CSV record exactly as the emulator writes result files (RFC 4180 quoting, ``\\n`` ends)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


CSV_HEADER = csv_line(RESULT_CSV_COLUMNS).encode("utf-8")


class SyntheticCsv:
    """The result CSV of a synthetic run: ``rows`` records of about ``row_bytes`` bytes each.

    A few dozen row templates are built once, each split where the row number goes, so producing
    a row is one ``bytes.join``; memory stays constant however many rows are streamed.
    """

    VARIANTS = 37
    _MARK = "@@ROW@@"

    def __init__(self, rows: int, row_bytes: int, seed: int = 0) -> None:
        self.rows = rows
        self.row_bytes = row_bytes
        self.seed = seed
        self._templates = [self._template(v) for v in range(self.VARIANTS)]

    def _template(self, variant: int) -> list[bytes]:
        q = (variant + self.seed) % len(_QUESTIONS)
        question, answer = _QUESTIONS[q], _ANSWERS[(q + variant) % len(_ANSWERS)]
        rationale = _RATIONALES[variant % len(_RATIONALES)]
        failed = variant % 19 == 7

        def values(question: str, answer: str, rationale: str, run_columns: bool = True) -> list[str]:
            inp = json.dumps([{"role": "user", "content": f"{question} #{self._MARK}"}], ensure_ascii=False)
            out = json.dumps({"role": "assistant", "content": answer}, ensure_ascii=False)
            return [
                inp,
                inp if run_columns else "",
                out,
                out if run_columns else "",
                "false" if failed else "true",
                "judge answer had no <rating> block" if failed else "",
                "" if failed else _CATEGORIES[variant % len(_CATEGORIES)],
                rationale,
            ]

        def size(vals: list[str]) -> int:
            return len(csv_line(vals).encode("utf-8")) + 2 * (7 - len(self._MARK))

        row = values(question, answer, rationale)
        if size(row) > self.row_bytes:  # small rows: shorter texts, down to a minimal record
            row = values(question[:24], answer[:24], rationale[:40])
        if size(row) > self.row_bytes:
            row = values(question[:6], answer[:6], rationale[:12], run_columns=False)
        base = size(row)
        if self.row_bytes > base:
            filler = ' 추가 설명, "quoted" text; 줄바꿈 포함.\n'
            need = self.row_bytes - base
            padded = (filler * (need // len(filler.encode("utf-8")) + 1)).encode("utf-8")[:need]
            row[-1] += padded.decode("utf-8", "ignore")
        return [part.encode("utf-8") for part in csv_line(row).split(self._MARK)]

    def row(self, i: int) -> bytes:
        return str(i).encode().join(self._templates[_digest(self.seed, i) % self.VARIANTS])

    def chunks(self, chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
        """The CSV (header first) in chunks of about ``chunk_bytes``."""
        parts: list[bytes] = [CSV_HEADER]
        size = len(CSV_HEADER)
        templates, variants, seed = self._templates, self.VARIANTS, self.seed
        for i in range(self.rows):
            row = str(i).encode().join(templates[_digest(seed, i) % variants])
            parts.append(row)
            size += len(row)
            if size >= chunk_bytes:
                yield b"".join(parts)
                parts, size = [], 0
        if parts:
            yield b"".join(parts)
