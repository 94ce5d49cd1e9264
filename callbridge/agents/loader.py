"""Your own Python agent: ``AGENT=package.module:Name`` names an ``Agent`` subclass, or a
factory (any callable) that returns an ``Agent``, importable by Python.

``load_factory(spec)`` imports it once, at start-up (the setting is checked when the
settings are read, so ``callbridge serve`` refuses to start with one line naming what is
wrong: a module that cannot be imported, a missing name, something that is neither an
``Agent`` subclass nor callable, an abstract class). ``build(spec, call_sid)`` makes one
agent per call: ``Name()``, or ``Name(call_sid="CA...")`` when it takes a ``call_sid``
keyword (or ``**kwargs``); a factory that returns something other than an ``Agent`` is an
``AgentError`` naming it.

The current directory is put first on ``sys.path`` for the import (as ``python -m`` and
uvicorn do), so ``AGENT=examples.pizza.agent:PizzaAgent callbridge serve`` works from a
checkout without installing the example.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from ..options import ConfigError
from .base import Agent, AgentError

SPEC = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
"""``package.module:Name`` (``Name`` may be dotted: ``module:Outer.make``)."""

Factory = Callable[..., Any]


def is_agent_path(name: str) -> bool:
    """Whether an ``AGENT`` value names Python code (it has a colon) rather than a built-in kind."""
    return ":" in name


@functools.cache
def load_factory(spec: str) -> Factory:
    """The class or factory ``spec`` names; ``ConfigError`` (naming ``AGENT=spec``) if it
    cannot be imported or is not an agent."""
    where = f"AGENT={spec}"
    m = SPEC.match(spec.strip())
    if m is None:
        raise ConfigError(f"{where}: expected package.module:Name (a class or factory of your own Agent)")
    module_name, attr_path = m["module"], m["name"]
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the user's module raises on import, said in one line
        raise ConfigError(
            f"{where}: cannot import {module_name}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{where}: {module_name} has no {attr_path}")
        target = getattr(target, part)
    if isinstance(target, type):
        if not issubclass(target, Agent):
            raise ConfigError(f"{where}: {attr_path} is a class but not a callbridge.agents.Agent subclass")
        if inspect.isabstract(target):
            missing = ", ".join(sorted(getattr(target, "__abstractmethods__", ())))
            raise ConfigError(f"{where}: {attr_path} is abstract (it does not implement {missing})")
    elif not callable(target):
        raise ConfigError(
            f"{where}: {attr_path} is neither an Agent subclass nor a factory (it is of type {type(target).__name__})"
        )
    return target


def _takes_call_sid(factory: Factory) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no keywords guessed
        return False
    return any(p.name == "call_sid" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build(spec: str, call_sid: str = "") -> Agent:
    """One agent for one call from ``AGENT=spec``; ``AgentError`` if the factory fails or
    returns something that is not an ``Agent``."""
    factory = load_factory(spec)
    try:
        agent = factory(call_sid=call_sid) if _takes_call_sid(factory) else factory()
    except Exception as exc:
        raise AgentError(f"AGENT={spec}: creating the agent failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(agent, Agent):
        raise AgentError(
            f"AGENT={spec} returned an object of type {type(agent).__name__}, not a callbridge.agents.Agent"
        )
    return agent
