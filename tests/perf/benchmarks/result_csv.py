"""Generate realistic GIP result CSVs: chat-message JSON, Korean text, embedded newlines, ~1.5k chars a row.

Used by the transfer benchmark and the transfer tests. Deterministic for a given seed; fast enough for
millions of rows (a pool of pre-built row bodies is varied by a counter, so every row is distinct).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from gip_airflow.api import RESULT_CSV_COLUMNS

_KO = [
    "안녕하세요",
    "오늘 날씨가 좋네요",
    "평가 결과를 요약해 주세요",
    "사용자의 질문에 정확하게 답변했습니다",
    "근거가 부족합니다",
    "모델이 지시를 따랐습니다",
    "환불 정책은 구매 후 14일 이내입니다",
    "배송은 보통 2~3일 걸립니다",
]
_EN = [
    "The assistant answered the question correctly.",
    "It cites the refund policy, but the date is wrong.",
    'He said "hello", then left; the end.',
    "Step 1: read the input.\nStep 2: compare with the expected output.",
    "Tabs\tand commas, semicolons; and quotes \"' are all here.",
]
CATEGORIES = ("bad", "neutral", "good")


def _text(rng: random.Random, chars: int) -> str:
    parts: list[str] = []
    size = 0
    while size < chars:
        piece = rng.choice(_KO) if rng.random() < 0.5 else rng.choice(_EN)
        if rng.random() < 0.15:
            piece += "\n"
        parts.append(piece)
        size += len(piece) + 1
    return " ".join(parts)[:chars]


def _body(rng: random.Random, row_chars: int, metric: str) -> list[str]:
    # Budget: inputs/outputs as chat JSON take most of the row, the rationale the rest.
    q = max(row_chars // 8, 10)
    messages = [
        {"role": "system", "content": "You are a helpful assistant. 친절하게 답변하세요."},
        {"role": "user", "content": _text(rng, q)},
    ]
    run_messages = [{"role": "user", "content": _text(rng, q)}]
    passed = rng.random() < 0.8
    if metric == "numeric":
        score = f"{rng.random():.3f}"
    elif metric == "bool":
        score = rng.choice(("true", "false"))
    else:
        score = rng.choice(CATEGORIES)
    return [
        json.dumps(messages, ensure_ascii=False),
        json.dumps(run_messages, ensure_ascii=False),
        json.dumps({"role": "assistant", "content": _text(rng, q)}, ensure_ascii=False),
        _text(rng, q * 2),
        "True" if passed else "False",
        "" if passed else "judge answer had no <rating> block",
        score if passed else "",
        f"<rationale>{_text(rng, q * 2)}</rationale>",
    ]


def write_result_csv(
    path: str | Path,
    rows: int,
    *,
    row_chars: int = 1500,
    metric: str = "category",
    seed: int = 7,
    pool: int = 997,
    extra_columns: tuple[str, ...] = (),
    lineterminator: str = "\r\n",
) -> int:
    """Write a result CSV of ``rows`` data rows to ``path``; return its size in bytes."""
    rng = random.Random(seed)
    bodies = [_body(rng, row_chars, metric) for _ in range(min(pool, max(rows, 1)))]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator=lineterminator)
        writer.writerow([*RESULT_CSV_COLUMNS, *extra_columns])
        for i in range(rows):
            body = bodies[i % len(bodies)]
            row = [*body]
            row[7] = f"{body[7]} #{i}"  # every row distinct
            writer.writerow([*row, *(f"{c}-{i}" for c in extra_columns)])
    return Path(path).stat().st_size
