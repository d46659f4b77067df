"""OpenLineage facets of the GIP operators, built only when apache-airflow-providers-openlineage runs them.

The operators' ``get_openlineage_facets_on_*`` methods import this module lazily: without the extra
``gip-airflow[openlineage]`` nothing here is ever imported. Datasets are named so lineage backends
(Marquez, DataHub) join them with other producers':

* Langfuse inputs: namespace ``langfuse://<host>``, name = the dataset, or ``<project>/traces`` and
  ``<project>/observations`` (project = the GIP credential's alias), with the selection (time window,
  filter, sampling) in the ``gipLangfuseSelection`` facet;
* a GIP run's result: namespace ``gip://<GIP API host>``, name ``<workspace>/experiments/<id>/runs/<id>``;
* warehouse tables: as the SQL hook's own OpenLineage database info names them (``postgres://host:port``,
  ``database.schema.table``), else as :mod:`gip_airflow.assets` does.

Facet building never fails a task: the OpenLineage provider logs and drops a facet method's exception.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    output_statistics_output_dataset,
    schema_dataset,
)

from gip_airflow import DOCS_URL, api

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from gip_airflow.assets import TableLocation
    from gip_airflow.hooks.gip import GipHook

log = logging.getLogger(__name__)

#: Facet keys (``run.facets[...]``, ``inputs[].facets[...]``).
RUN_FACET = "gipExperimentRun"
SELECTION_FACET = "gipLangfuseSelection"

#: Experiment type -> (config key of its filter, dataset name suffix, the filter's window fields).
_SELECTION_FILTERS = {
    "langfuse_trace": ("trace_filter_request", "traces", api.TraceFilterRequest.WINDOW_FIELDS),
    "langfuse_observation": (
        "observation_filter_request",
        "observations",
        api.ObservationFilterRequest.WINDOW_FIELDS,
    ),
}


@attrs.define
class GipExperimentRunRunFacet(RunFacet):
    """A GIP evaluation: what was judged, by which evaluator and judge model, and what it cost."""

    experimentId: str | None = None
    experimentName: str | None = None
    experimentType: str | None = None
    evaluatorId: str | None = None
    evaluatorName: str | None = None
    judgeModel: str | None = None
    runId: str | None = None
    runStatus: str | None = None
    consoleUrl: str | None = None
    promptTokens: int | None = None
    completionTokens: int | None = None
    totalTokens: int | None = None
    error: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{DOCS_URL}lineage.html#gipexperimentrun"


@attrs.define
class GipLangfuseSelectionDatasetFacet(DatasetFacet):
    """Which Langfuse items an experiment selects: the time window, filter, sampling and limit."""

    experimentType: str | None = None
    windowStart: str | None = None
    windowEnd: str | None = None
    relativeTimeRange: str | None = None
    filter: dict[str, Any] | None = None
    samplingRate: float | None = None
    maxCount: int | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{DOCS_URL}lineage.html#gip-langfuseselection"


# ---------------------------------------------------------------------------------------------
# GipStartExperimentRunOperator, GipExperimentRunSensor
# ---------------------------------------------------------------------------------------------


def experiment_run_lineage(
    gip_conn_id: str,
    experiment_id: Any,
    evaluator_id: Any = None,
    run: Mapping[str, Any] | None = None,
) -> OperatorLineage:
    """Inputs (the experiment's Langfuse data) and the run facet; ``run`` (the GIP run) once known.

    Uses its own short-lived hook (one attempt per request, 5 s limit): the OpenLineage listener may run
    this in a forked process, with its own time limit.
    """
    from gip_airflow.hooks.gip import GipHook

    with GipHook(gip_conn_id, max_retries=0, timeout=5) as hook:
        return _experiment_run_lineage(hook, experiment_id, evaluator_id, dict(run or {}))


def _experiment_run_lineage(
    hook: GipHook, experiment_id: Any, evaluator_id: Any, run: dict[str, Any]
) -> OperatorLineage:
    experiment = _fetch(hook.get_experiment, experiment_id) if isinstance(experiment_id, str) else None
    evaluator_id = evaluator_id or run.get("evaluator_id")
    evaluator = _fetch(hook.get_evaluator, evaluator_id) if isinstance(evaluator_id, str) else None
    usage = (run.get("aggregated_result") or {}).get("total_usage") or {}
    run_id = run.get("id")
    console_url = hook.console_run_url(str(experiment_id), str(run_id)) if run_id and experiment_id else None
    facet = GipExperimentRunRunFacet(
        experimentId=str(experiment_id) if experiment_id else None,
        experimentName=experiment.name if experiment else None,
        experimentType=experiment.type if experiment else None,
        evaluatorId=str(evaluator_id) if evaluator_id else None,
        evaluatorName=evaluator.name if evaluator else None,
        judgeModel=((evaluator.evaluation_config or {}).get("judge_model_public_id") if evaluator else None),
        runId=str(run_id) if run_id else None,
        runStatus=run.get("status"),
        consoleUrl=console_url,
        promptTokens=usage.get("prompt_tokens"),
        completionTokens=usage.get("completion_tokens"),
        totalTokens=usage.get("total_tokens"),
        error=(run.get("aggregated_result") or {}).get("error"),
    )
    inputs = langfuse_inputs(hook, experiment) if experiment else []
    return OperatorLineage(inputs=inputs, run_facets={RUN_FACET: facet})


def langfuse_inputs(hook: GipHook, experiment: api.Experiment) -> list[InputDataset]:
    """The Langfuse dataset, traces or observations an experiment evaluates."""
    config = dict(experiment.config or {})
    credential = _credential(hook, config.get("integrated_service_credential_id"))
    host = urlsplit(credential.base_url or "").netloc if credential else ""
    namespace = f"langfuse://{host or 'unknown'}"
    project = (credential.alias or credential.public_key or credential.id) if credential else "unknown"
    etype = experiment.type or ""
    if etype == "langfuse_dataset":
        name = str(config.get("dataset_name") or "unknown")
        selection = GipLangfuseSelectionDatasetFacet(experimentType=etype)
    elif etype in _SELECTION_FILTERS:
        key, kind, (start_field, end_field) = _SELECTION_FILTERS[etype]
        flt = {k: v for k, v in dict(config.get(key) or {}).items() if v is not None}
        name = f"{project}/{kind}"
        selection = GipLangfuseSelectionDatasetFacet(
            experimentType=etype,
            windowStart=_iso(flt.pop(start_field, None)),
            windowEnd=_iso(flt.pop(end_field, None)),
            relativeTimeRange=flt.pop("relative_time_range", None),
            filter=flt or None,
            samplingRate=config.get("sampling_rate"),
            maxCount=config.get("max_trace_count") or config.get("max_observation_count"),
        )
    else:
        return []
    return [InputDataset(namespace=namespace, name=name, facets={SELECTION_FACET: selection})]


# ---------------------------------------------------------------------------------------------
# GipToSqlOperator
# ---------------------------------------------------------------------------------------------


def result_dataset(hook: GipHook, experiment_id: str, run_id: str) -> InputDataset:
    """The result of a GIP run, as the input of a load."""
    config = hook.config
    return InputDataset(
        namespace=f"gip://{urlsplit(config.base_url).netloc}",
        name=f"{config.workspace_id}/experiments/{experiment_id}/runs/{run_id}",
    )


def table_dataset(
    db_hook: DbApiHook,
    conn: Any,
    location: TableLocation,
    *,
    columns: Iterable[tuple[str, str]] = (),
    rows: int | None = None,
    size: int | None = None,
) -> OutputDataset:
    """A warehouse table named as the SQL hook's OpenLineage database info names it."""
    namespace, name = location.namespace, location.name
    try:
        info = db_hook.get_openlineage_database_info(conn)
    except Exception as exc:
        log.debug("No OpenLineage database info from %s: %s", type(db_hook).__name__, exc)
        info = None
    if info is not None:
        from airflow.providers.openlineage.sqlparser import SQLParser

        namespace = SQLParser.create_namespace(info)
        parts = [info.database or location.database, location.schema, location.table]
        name = ".".join(info.normalize_name_method(p) for p in parts if p)
    facets: dict[str, Any] = {}
    fields = [schema_dataset.SchemaDatasetFacetFields(name=c, type=t) for c, t in columns]
    if fields:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields)
    output_facets: dict[str, Any] = {}
    if rows is not None:
        statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet
        output_facets["outputStatistics"] = statistics(rowCount=rows, size=size)
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _fetch(getter: Any, object_id: str) -> Any:
    try:
        return getter(object_id)
    except Exception as exc:
        log.info("OpenLineage: cannot read %s from GIP: %s", object_id, exc)
        return None


def _credential(hook: GipHook, credential_id: Any) -> api.Credential | None:
    if not credential_id:
        return None
    try:
        return next((c for c in hook.list_credentials() if c.id == credential_id), None)
    except Exception as exc:
        log.info("OpenLineage: cannot list GIP credentials to name the Langfuse host: %s", exc)
        return None


def _iso(epoch_ms: Any) -> str | None:
    if epoch_ms is None:
        return None
    return dt.datetime.fromtimestamp(int(epoch_ms) / 1000, tz=dt.UTC).isoformat()


__all__ = [
    "GipExperimentRunRunFacet",
    "GipLangfuseSelectionDatasetFacet",
    "experiment_run_lineage",
    "langfuse_inputs",
    "result_dataset",
    "table_dataset",
]
