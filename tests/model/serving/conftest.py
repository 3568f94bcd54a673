"""The native library fixture of test_compiled_step.py, shared with the drafting tests (built once a session)."""

from tests.model.serving.test_compiled_step import library  # noqa: F401 (fixture)
