"""Apache Airflow 3 provider for the GIP evaluation API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


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
                "external-doc-url": "https://github.com/",
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
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "GIP console API URL",
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
