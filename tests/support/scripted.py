"""Model specs for the scripted provider, and the two steps most turn tests use."""

from __future__ import annotations


def scripted(*steps: dict, **parameters) -> dict:
    """A session's model spec: the scripted provider answers with ``steps`` in order."""
    return {"provider": "scripted", "model": "scripted-1", "parameters": {"script": list(steps), **parameters}}


# A step that calls the calculator tool, and a final answer with usage.
CALC = {"text": "Computing.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]}
ANSWER = {"text": "It is 42.", "usage": {"input_tokens": 100, "output_tokens": 20}}
