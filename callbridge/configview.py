"""What the command line shows of ``Settings``: each setting's metadata and the values in force.

``options()`` lists every setting once (variable, ``serve`` flag, default, meaning, secret or
not); it is the one place that reads how ``Settings`` declares them. ``serve --help`` and
``config`` are built from it. ``in_force(env, flags)`` reads the settings as ``serve`` would
and says where each value came from; ``render(...)`` lays that out for a terminal, secrets
masked. No I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .config import Settings

VALUE_CHARS = 48
"""A longer value is cut (with ``...``) in the ``config`` listing."""


@dataclass(frozen=True)
class Option:
    """One setting: ``path`` is its attribute (``("port",)``; a group's setting has the
    group's attribute first), ``kind`` its type name (``str``, ``int``, ``float``, ``bool``)."""

    path: tuple[str, ...]
    env: str
    flag: str
    default: Any
    doc: str
    secret: bool
    kind: str

    @property
    def name(self) -> str:
        return self.path[-1]

    def value(self, settings: Any) -> Any:
        for attr in self.path:
            settings = getattr(settings, attr)
        return settings


def options(cls: type = Settings) -> list[Option]:
    """Every setting of ``cls`` in declaration order (settings of a nested group too)."""
    return list(_options(cls, ()))


def _options(cls: type, prefix: tuple[str, ...]) -> Iterator[Option]:
    for f in dataclasses.fields(cls):
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if "env" not in f.metadata and dataclasses.is_dataclass(default):
            yield from _options(type(default), (*prefix, f.name))
            continue
        yield Option(
            path=(*prefix, f.name),
            env=f.metadata["env"],
            flag=f.metadata.get("flag", ""),
            default=default,
            doc=f.metadata.get("doc", ""),
            secret=bool(f.metadata.get("secret")),
            kind=f.type if isinstance(f.type, str) else f.type.__name__,
        )


def plain(doc: str) -> str:
    """A Markdown doc line as terminal text (no backticks)."""
    return doc.replace("`", "")


def shown(option: Option, value: Any) -> str:
    """``value`` as the terminal shows it: secrets masked, empty as ``(unset)``, long values cut."""
    if value in ("", None):
        return "(unset)"
    if option.secret:
        return "******** (set)"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."


def in_force(env: Mapping[str, str], flags: Mapping[str, Any]) -> tuple[Settings, list[tuple[Option, str]]]:
    """The settings ``serve`` would run with (``env`` overridden by the non-None ``flags``,
    keyed by attribute name) and, for each option, where its value came from: ``flag``,
    ``env`` or ``default``. Raises ``ConfigError`` as ``Settings.from_env`` does."""
    settings = Settings.from_env(env, **flags)
    sources = []
    for option in options():
        if flags.get(option.name) is not None:
            sources.append((option, f"flag {option.flag}"))
        elif option.env in env:
            sources.append((option, "env"))
        else:
            sources.append((option, "default"))
    return settings, sources


def render(settings: Settings, sources: list[tuple[Option, str]]) -> str:
    """One line per setting: variable, value in force, where it came from."""
    width = max(len(option.env) for option, _ in sources)
    values = [shown(option, option.value(settings)) for option, _ in sources]
    value_width = max(len(v) for v in values)
    lines = [
        f"{'VARIABLE':<{width}}  {'VALUE':<{value_width}}  FROM",
    ]
    for (option, source), value in zip(sources, values, strict=True):
        lines.append(f"{option.env:<{width}}  {value:<{value_width}}  {source}")
    changed = sum(1 for _, source in sources if source != "default")
    lines.append(
        f"{changed} of {len(sources)} set (env: the environment, flag: the command line); secrets masked."
    )
    return "\n".join(lines)
