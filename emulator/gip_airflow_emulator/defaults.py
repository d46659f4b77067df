"""Default identities of the emulator (stdlib only, shared by the server and the pytest plugin).

These values are public test fixtures, not secrets: anyone running the emulator uses them.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
DEFAULT_API_KEY = "gip-emulator-key"
DEFAULT_WORKSPACE_ID = "2d6d2b89-8454-40a1-8d85-0aaba543f47e"
DEFAULT_USERNAME = "gip-user"
DEFAULT_PASSWORD = "gip-password"
DEFAULT_COGNITO_CLIENT_ID = "gip-emulator-client"
DEFAULT_TOKEN_SECONDS = 3600
DEFAULT_LANGFUSE_PUBLIC_KEY = "pk-lf-emulator"
DEFAULT_LANGFUSE_SECRET_KEY = "sk-lf-emulator"
DEFAULT_LANGFUSE_PROJECT_ID = "emulator-project"
DEFAULT_RUN_SECONDS = 2.0

#: Path of the emulated Cognito ``InitiateAuth`` endpoint on the emulator.
COGNITO_PATH = "/_cognito/"
#: Prefix of the control API (no auth; never faulted).
CONTROL_PREFIX = "/_emulator"
