"""Lookups over the [assumed] list endpoints: any 4xx but 401 means "no lookup", and the connection
extra ``list_endpoints: false`` sends no undocumented request at all (issue 18, item 13)."""

from __future__ import annotations

import logging

import pytest

from gip_airflow.exceptions import GipAuthError, GipError
from gip_airflow.operators.gip import GipCreateEvaluatorOperator, GipStartExperimentRunOperator
from tests.integration.hostile_http import HostileServer, Reply, Seen, gip_conn, hook_for

EVALUATOR = {
    "name": "lookup-test",
    "metric": {"type": "bool"},
    "evaluation_config": {
        "judge_model_seq_id": 19,
        "judge_model_public_id": "openai/gpt-4",
        "judge_prompt": "p",
    },
}


def gip(list_status: int):
    """A GIP whose list endpoints answer ``list_status`` and whose creates succeed."""

    def route(seen: Seen) -> Reply:
        if seen.method == "GET":
            return Reply(list_status, {"message": "listing is not allowed for this key"})
        return Reply(201, {"id": "ev-1", **EVALUATOR})

    return route


def evaluator_op() -> GipCreateEvaluatorOperator:
    return GipCreateEvaluatorOperator(task_id="evaluator", gip_conn_id="gip_hostile", **EVALUATOR)


@pytest.mark.parametrize("status", [400, 403, 404, 405, 409, 422, 429, 501])
def test_any_4xx_but_401_on_a_lookup_means_no_lookup(monkeypatch, caplog, status):
    caplog.set_level(logging.INFO)
    with HostileServer(gip(status)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, max_retries=0))
        op = evaluator_op()
        assert op.execute({}) == "ev-1"
        op.hook.close()
    assert [s.method for s in server.seen] == ["GET", "POST"]
    notes = [
        r for r in caplog.records if "lookup" in r.getMessage().lower() and str(status) in r.getMessage()
    ]
    assert len(notes) == 1, [r.getMessage() for r in caplog.records]


def test_401_on_a_lookup_still_fails(monkeypatch):
    with HostileServer(gip(401)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server))
        op = evaluator_op()
        with pytest.raises(GipAuthError):
            op.execute({})
        op.hook.close()
    assert [s.method for s in server.seen] == ["GET"]


def test_run_lookup_treats_403_as_no_lookup(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    with HostileServer(gip(403)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server))
        op = GipStartExperimentRunOperator(
            task_id="run", experiment_id="exp-1", evaluator_id="ev-1", gip_conn_id="gip_hostile"
        )
        assert op._find_reusable_run("d") is None
        op.hook.close()
    assert "403" in caplog.text


def test_list_endpoints_false_sends_no_undocumented_request(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    with HostileServer(gip(200)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, list_endpoints=False))
        op = evaluator_op()
        assert op.execute({}) == "ev-1"
        op.hook.close()
        run_op = GipStartExperimentRunOperator(
            task_id="run", experiment_id="exp-1", evaluator_id="ev-1", gip_conn_id="gip_hostile"
        )
        assert run_op._find_reusable_run("d") is None
        run_op.hook.close()
        with hook_for(monkeypatch, server, list_endpoints="false") as hook:
            for call in (
                hook.list_evaluators,
                lambda: hook.get_evaluator("ev-1"),
                lambda: hook.get_experiment("e"),
            ):
                with pytest.raises(GipError, match="list_endpoints"):
                    call()
    assert [(s.method, s.path) for s in server.seen] == [("POST", "/api/workspaces/ws-1/evals/evaluators")]
    assert "task state store" in caplog.text


def test_list_endpoints_is_a_connection_form_field():
    from gip_airflow import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["conn-fields"]["list_endpoints"]["schema"]["default"] is True


def test_a_failed_cognito_login_during_a_lookup_is_raised_not_skipped(monkeypatch):
    def route(seen: Seen) -> Reply:  # Cognito answers 400 (its shape for a wrong password)
        return Reply(400, {"__type": "NotAuthorizedException", "message": "Incorrect username or password."})

    with HostileServer(route) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, auth_type="cognito"))
        op = evaluator_op()
        with pytest.raises(GipAuthError, match="Cognito login"):
            op.execute({})
        op.hook.close()
    assert len(server.seen) == 1  # one login attempt; the create was never tried with bad credentials


def test_load_reads_no_evaluator_when_list_endpoints_is_false(monkeypatch):
    from gip_airflow.transfers.gip_to_sql import GipToSqlOperator

    with HostileServer(gip(200)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server, list_endpoints=False))
        op = GipToSqlOperator(
            task_id="load",
            run_id="run-1",
            experiment_id="exp-1",
            conn_id="warehouse",
            table="results",
            gip_conn_id="gip_hostile",
        )
        assert op._evaluator_metric("ev-1") is None  # score_value without the metric, as the docs say
        op.gip_hook.close()
    assert server.seen == []
