"""Conversational agents: what the call's Upstream asks for the agent's next reply.

``create_agent(kind, **config)`` builds one agent per call:

- ``desk`` (default): an offline, rule-based appointment desk (``desk.py``, ``desk_parse.py``).
- ``openai``: any OpenAI-compatible streaming chat-completions endpoint (llama.cpp server,
  vLLM, Ollama, ...) (``openai_chat.py``).
- ``webhook``: the user's own HTTP endpoint, optionally HMAC-signed (``webhook.py``,
  ``signing.py``).

Every agent streams its reply as text pieces (``Agent.reply``), raises ``AgentError`` when its
back end fails, and leaves timeouts, retries and fallbacks to the caller.
"""

from __future__ import annotations

from .base import AGENT_KINDS, Agent, AgentError, Turn, create_agent, reply_text

__all__ = ["AGENT_KINDS", "Agent", "AgentError", "Turn", "create_agent", "reply_text"]
