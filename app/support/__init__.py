"""The customer-service bot (docs/SUPPORT.md): `agent` the loop, `guard` the policy in code, `offer` what the
grammar offers, `prompt` what the model reads, `grounding` the post-check of its messages, `redact` the filter
of what it sends."""

from app.support.agent import Reply, Support, ToolCall, open_support

__all__ = ["Reply", "Support", "ToolCall", "open_support"]
