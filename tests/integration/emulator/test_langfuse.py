"""The emulated Langfuse API: datasets, items, traces, observations, scores, filters, pagination."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from .conftest import PLAN_DATASET, QA_DATASET


def iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_dataset_and_items(gip):
    ds = gip.ok(gip.lf.get(f"/api/public/v2/datasets/{PLAN_DATASET}"))
    assert ds["name"] == PLAN_DATASET and ds["projectId"]
    for key in ("id", "description", "metadata", "createdAt", "updatedAt"):
        assert key in ds
    missing = gip.lf.get("/api/public/v2/datasets/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["message"]
    spaced = gip.ok(gip.lf.get("/api/public/v2/datasets/" + quote("plan suggestion v3")))
    assert spaced["name"] == "plan suggestion v3"

    items = gip.langfuse_all("/api/public/dataset-items", datasetName=PLAN_DATASET)
    assert len(items) == 24
    assert {i["status"] for i in items} == {"ACTIVE", "ARCHIVED"}
    assert sum(i["status"] == "ARCHIVED" for i in items) == 3
    assert all(i["datasetName"] == PLAN_DATASET and i["datasetId"] == ds["id"] for i in items)
    assert sum(1 for i in items if i["sourceTraceId"]) == 22
    assert sum(1 for i in items if i["sourceObservationId"] and not i["sourceTraceId"]) == 2
    qa = gip.langfuse_all("/api/public/dataset-items", datasetName=QA_DATASET)
    assert qa and not any(i["sourceTraceId"] or i["sourceObservationId"] for i in qa)

    page = gip.ok(
        gip.lf.get("/api/public/dataset-items", params={"datasetName": PLAN_DATASET, "page": 2, "limit": 10})
    )
    assert page["meta"] == {"page": 2, "limit": 10, "totalItems": 24, "totalPages": 3}
    assert [i["id"] for i in page["data"]] == [i["id"] for i in items[10:20]]

    one = items[0]
    filtered = gip.ok(
        gip.lf.get(
            "/api/public/dataset-items",
            params={"datasetName": PLAN_DATASET, "sourceTraceId": one["sourceTraceId"]},
        )
    )
    assert [i["id"] for i in filtered["data"]] == [one["id"]]
    assert gip.ok(gip.lf.get(f"/api/public/dataset-items/{one['id']}"))["id"] == one["id"]
    assert gip.lf.get("/api/public/dataset-items", params={"datasetName": "nope"}).status_code == 404


def test_synthetic_dataset_pages_lazily(gip):
    big = gip.ok(
        gip.lf.get(
            "/api/public/dataset-items",
            params={"datasetName": "synthetic-chat-100k", "page": 1000, "limit": 100},
        )
    )
    assert big["meta"]["totalItems"] == 100_000 and big["meta"]["totalPages"] == 1000
    assert len(big["data"]) == 100
    last = big["data"][-1]
    assert last["id"].endswith("-item-00099999") and last["status"] == "ARCHIVED"
    assert gip.ok(gip.lf.get(f"/api/public/dataset-items/{last['id']}"))["input"] == last["input"]


def test_trace_shape_and_spread(gip):
    traces = gip.langfuse_all("/api/public/traces")
    assert len(traces) >= 80
    stamps = [iso(t["timestamp"]) for t in traces]
    assert stamps == sorted(stamps, reverse=True)  # default order: newest first
    now = dt.datetime.now(dt.UTC)
    assert now - stamps[-1] <= dt.timedelta(days=14, hours=1)
    assert len({s.date() for s in stamps}) >= 14
    trace = traces[0]
    for key in (
        "id",
        "timestamp",
        "name",
        "input",
        "output",
        "sessionId",
        "release",
        "version",
        "userId",
        "metadata",
        "tags",
        "public",
        "environment",
        "htmlPath",
        "latency",
        "totalCost",
        "observations",
        "scores",
    ):
        assert key in trace
    assert any("\n" in m["content"] for t in traces for m in t["input"])
    assert any(any("\uac00" <= ch <= "\ud7a3" for ch in str(t["input"])) for t in traces)
    assert max(len(str(t["input"])) for t in traces) > 5000
    full = gip.ok(gip.lf.get(f"/api/public/traces/{trace['id']}"))
    assert [o["id"] for o in full["observations"]] == trace["observations"]
    assert gip.lf.get("/api/public/traces/nope").status_code == 404


def test_trace_filters(gip):
    traces = gip.langfuse_all("/api/public/traces")

    def ids(**params):
        return {t["id"] for t in gip.langfuse_all("/api/public/traces", **params)}

    assert ids(name="call-summary") == {t["id"] for t in traces if t["name"] == "call-summary"}
    assert ids(tags=["prod", "plan"]) == {t["id"] for t in traces if {"prod", "plan"} <= set(t["tags"])}
    assert ids(tags=["prod", "plan"]) < ids(tags=["prod"])
    assert ids(version="v3") == {t["id"] for t in traces if t["version"] == "v3"}
    assert ids(release="2025.03.1") == {t["id"] for t in traces if t["release"] == "2025.03.1"}
    assert ids(userId=traces[5]["userId"]) == {t["id"] for t in traces if t["userId"] == traces[5]["userId"]}
    assert ids(sessionId=traces[5]["sessionId"]) == {
        t["id"] for t in traces if t["sessionId"] == traces[5]["sessionId"]
    }
    # Window: from inclusive, to exclusive.
    a, b = traces[30], traces[10]
    window = ids(fromTimestamp=a["timestamp"], toTimestamp=b["timestamp"])
    assert a["id"] in window and b["id"] not in window
    assert window == {t["id"] for t in traces[11:31]}
    asc = gip.ok(gip.lf.get("/api/public/traces", params={"orderBy": "timestamp.asc", "limit": 3}))["data"]
    assert [t["id"] for t in asc] == [t["id"] for t in reversed(traces[-3:])]
    bad = gip.lf.get("/api/public/traces", params={"orderBy": "colour.up"})
    assert bad.status_code == 400 and "orderBy" in bad.json()["message"]
    bad = gip.lf.get("/api/public/traces", params={"fromTimestamp": "yesterday"})
    assert bad.status_code == 400 and "fromTimestamp" in bad.json()["message"]
    bad = gip.lf.get("/api/public/traces", params={"limit": 500})
    assert bad.status_code == 400 and "limit" in bad.json()["message"]


def test_observation_filters(gip):
    observations = gip.langfuse_all("/api/public/observations")
    assert {o["type"] for o in observations} == {"GENERATION", "SPAN", "EVENT"}

    def ids(**params):
        return {o["id"] for o in gip.langfuse_all("/api/public/observations", **params)}

    assert ids(name="llm-call") == {o["id"] for o in observations if o["name"] == "llm-call"}
    assert ids(type="EVENT") == {o["id"] for o in observations if o["type"] == "EVENT"}
    trace_id = observations[0]["traceId"]
    assert ids(traceId=trace_id) == {o["id"] for o in observations if o["traceId"] == trace_id}
    assert ids(version="v1") == {o["id"] for o in observations if o["version"] == "v1"}
    gens = sorted((o for o in observations if o["type"] == "GENERATION"), key=lambda o: o["startTime"])
    a, b = gens[5], gens[20]
    window = ids(name="llm-call", fromStartTime=a["startTime"], toStartTime=b["startTime"])
    assert window == {o["id"] for o in gens[5:20]}
    gen = gens[0]
    for key in (
        "model",
        "modelParameters",
        "usageDetails",
        "costDetails",
        "latency",
        "level",
        "parentObservationId",
        "startTime",
        "endTime",
    ):
        assert key in gen
    assert gen["latency"] is not None
    assert gip.ok(gip.lf.get(f"/api/public/observations/{gen['id']}"))["id"] == gen["id"]
    assert gip.lf.get("/api/public/observations", params={"type": "LLM"}).status_code == 400


def test_scores_post_upsert_and_filters(gip):
    trace = gip.langfuse_all("/api/public/traces", name="rag-answer")[0]
    body = {
        "id": "test-score-upsert",
        "traceId": trace["id"],
        "name": "test_accuracy",
        "value": 0.25,
        "dataType": "NUMERIC",
        "comment": "first",
    }
    assert gip.ok(gip.lf.post("/api/public/scores", json=body)) == {"id": "test-score-upsert"}
    gip.ok(gip.lf.post("/api/public/scores", json={**body, "value": 0.75, "comment": "second"}))
    listed = gip.ok(gip.lf.get("/api/public/scores", params={"name": "test_accuracy"}))["data"]
    assert len(listed) == 1 and listed[0]["value"] == 0.75 and listed[0]["comment"] == "second"
    assert gip.ok(gip.lf.get("/api/public/scores/test-score-upsert"))["source"] == "API"
    assert "test-score-upsert" in gip.ok(gip.lf.get(f"/api/public/traces/{trace['id']}"))["scores"][-1]["id"]

    cat = gip.ok(
        gip.lf.post(
            "/api/public/scores",
            json={"traceId": trace["id"], "name": "test_cat", "value": "good", "dataType": "CATEGORICAL"},
        )
    )
    got = gip.ok(gip.lf.get(f"/api/public/scores/{cat['id']}"))
    assert got["stringValue"] == "good" and got["dataType"] == "CATEGORICAL"
    boolean = gip.ok(
        gip.lf.post(
            "/api/public/scores",
            json={"traceId": trace["id"], "name": "test_bool", "value": 1, "dataType": "BOOLEAN"},
        )
    )
    got = gip.ok(gip.lf.get(f"/api/public/scores/{boolean['id']}"))
    assert got["value"] == 1.0 and got["stringValue"] == "True"
    assert (
        gip.ok(
            gip.lf.get("/api/public/scores", params={"name": "test_accuracy", "operator": ">", "value": 0.5})
        )["meta"]["totalItems"]
        == 1
    )
    assert (
        gip.ok(
            gip.lf.get("/api/public/scores", params={"name": "test_accuracy", "operator": "<", "value": 0.5})
        )["meta"]["totalItems"]
        == 0
    )
    assert (
        gip.ok(gip.lf.get("/api/public/scores", params={"dataType": "BOOLEAN", "name": "user-feedback"}))[
            "meta"
        ]["totalItems"]
        > 0
    )

    for bad, field in (
        ({"name": "x", "value": 1}, "traceId"),
        ({"traceId": trace["id"], "name": "x", "value": 2, "dataType": "BOOLEAN"}, "BOOLEAN"),
        ({"traceId": trace["id"], "name": "x", "value": 1, "dataType": "CATEGORICAL"}, "CATEGORICAL"),
        ({"traceId": trace["id"], "name": "x", "value": "high", "dataType": "NUMERIC"}, "NUMERIC"),
    ):
        answer = gip.lf.post("/api/public/scores", json=bad)
        assert answer.status_code == 400 and field in answer.json()["message"], answer.text
