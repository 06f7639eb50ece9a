"""The job tests' tiny decoder (trained once per session) for the report's slow browser test."""
from tests.job.conftest import tiny_decoder  # noqa: F401
