"""Apache Airflow 3 provider for the GIP evaluation API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["DOCS_URL", "__version__", "get_provider_info"]

#: The provider's documentation site (shown by ``airflow providers list`` and in the UI).
DOCS_URL = "https://gip-airflow.readthedocs.io/"


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "gip-airflow",
        "name": "GIP",
        "description": "Run GIP LLM-as-a-judge evaluations (over Langfuse data) from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "GIP",
                "external-doc-url": DOCS_URL,
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "GIP", "python-modules": ["gip_airflow.hooks.gip"]}],
        "operators": [
            {
                "integration-name": "GIP",
                "python-modules": ["gip_airflow.operators.gip", "gip_airflow.operators.gate"],
            }
        ],
        "sensors": [{"integration-name": "GIP", "python-modules": ["gip_airflow.sensors.gip"]}],
        "triggers": [{"integration-name": "GIP", "python-modules": ["gip_airflow.triggers.gip"]}],
        "transfers": [
            {
                "source-integration-name": "GIP",
                "target-integration-name": "Common SQL",
                "python-module": "gip_airflow.transfers.gip_to_sql",
            }
        ],
        "plugins": [
            {
                "name": "gip_evaluations",
                "plugin-class": "gip_airflow.plugins.evaluations.GipEvaluationsPlugin",
            }
        ],
        "config": _config(),
        "extra-links": ["gip_airflow.links.GipExperimentRunLink"],
        "connection-types": [
            {
                "connection-type": "gip",
                "hook-class-name": "gip_airflow.hooks.gip.GipHook",
                "hook-name": "GIP",
                "conn-fields": {
                    "workspace_id": {
                        "label": "Workspace ID",
                        "schema": {"type": "string"},
                        "description": "GIP workspace UUID; every API path is under /api/workspaces/{id}.",
                    },
                    "auth_type": {
                        "label": "Auth type",
                        "schema": {"type": "string", "enum": ["api_key", "cognito"], "default": "api_key"},
                        "description": "api_key: Password holds the enterprise API key. "
                        "cognito: Login/Password are Cognito user credentials.",
                    },
                    "cognito_client_id": {
                        "label": "Cognito client ID",
                        "schema": {"type": ["string", "null"]},
                        "description": "Only for auth type cognito.",
                    },
                    "cognito_endpoint": {
                        "label": "Cognito endpoint",
                        "schema": {"type": ["string", "null"]},
                        "description": "Only for auth type cognito, e.g. https://cognito-idp.ap-northeast-2.amazonaws.com",
                    },
                    "console_url": {
                        "label": "Console URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Base URL of the GIP web console, used for links to runs.",
                    },
                    "timeout": {
                        "label": "Request timeout (s)",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "schema": {"type": ["integer", "null"], "default": 5},
                        "description": "Retries of a failed request (connection errors, 429, 5xx).",
                    },
                    "retry_backoff": {
                        "label": "Retry backoff (s)",
                        "schema": {"type": ["number", "null"], "default": 1},
                        "description": "Base of the exponential backoff between retries.",
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "schema": {"type": "boolean", "default": True},
                        "description": "Turn off only for a test server with a self-signed certificate.",
                    },
                    "scheme": {
                        "label": "Scheme (alternative to the Schema field)",
                        "schema": {"type": ["string", "null"], "enum": ["https", "http", None]},
                        "description": "Used when neither the host nor Schema names one (default https).",
                    },
                    "api_key": {
                        "label": "API key (alternative to Password)",
                        "schema": {"type": ["string", "null"], "format": "password"},
                        "description": "Used only when Password is empty.",
                    },
                    "list_endpoints": {
                        "label": "Use undocumented list endpoints",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "false: send only documented requests; lookups before creates "
                        "are skipped, so retry safety rests on the task state store alone.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": [],
                    "relabeling": {
                        "host": "GIP console API URL",
                        "schema": "Scheme (http/https) when the host has none",
                        "port": "Port (when the host URL has none)",
                        "login": "Cognito username (auth type cognito)",
                        "password": "API key (api_key) or Cognito password (cognito)",
                    },
                    "placeholders": {
                        "host": "https://dev-console-api.platform.a15t.com",
                        "workspace_id": "2d6d2b89-8454-40a1-8d85-0aaba543f47e",
                        "auth_type": "api_key",
                        "console_url": "https://dev-console.platform.a15t.com",
                    },
                },
            }
        ],
    }


def _option(description: str, default: str, example: str) -> dict[str, Any]:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": "string",
        "example": example,
        "default": default,
    }


def _config() -> dict[str, Any]:
    """The ``[gip]`` section: what the Evaluations view in the Airflow UI reads."""
    return {
        "gip": {
            "description": "Evaluations view in the Airflow UI (GIP runs loaded by GipToSqlOperator).",
            "options": {
                "warehouse_conn_id": _option(
                    "common.sql connection of the warehouse GipToSqlOperator loads into.",
                    "gip_warehouse",
                    "gip_warehouse",
                ),
                "results_table": _option(
                    "Results table(s) GipToSqlOperator loads, comma-separated; the view reads their summary "
                    "tables <table>_runs and, when present, gate verdicts from <table>_gates.",
                    "gip_results",
                    "gip_trace_results,gip_model_comparison_results",
                ),
                "console_run_url": _option(
                    "Link to a run in the GIP console, with {experiment_id} and {run_id}. Empty: built "
                    "from the console_url and workspace_id extras of the [gip] gip_conn_id connection.",
                    "",
                    "https://console.example.com/workspaces/<id>/evals/experiments/{experiment_id}/runs/{run_id}",
                ),
                "gip_conn_id": _option(
                    "GIP connection whose console_url gives run links.", "gip_default", "gip_default"
                ),
                "max_runs": {
                    **_option(
                        "Most runs one DAG page shows (its ?limit= is capped to this).", "5000", "5000"
                    ),
                    "type": "integer",
                },
            },
        }
    }
