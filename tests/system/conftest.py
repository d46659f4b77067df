"""System tests reuse the operators' emulator environment (``gip_default`` + ``langfuse_default``)."""

from tests.operators.conftest import gip_env  # noqa: F401
