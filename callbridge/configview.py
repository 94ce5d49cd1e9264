"""What the command line shows of ``Settings``: each setting's metadata and the values in force.

``options()`` lists every setting once (variable, ``serve`` flag, default, meaning, secret or
not); it is the one place that reads how ``Settings`` declares them. ``serve --help`` and
``config`` are built from it. ``in_force(env, flags)`` reads the settings as ``serve`` would
and says where each value came from; ``render(...)`` lays that out for a terminal, secrets
masked. No I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import GROUPS, PROVIDERS, Settings
from .options import options_of

VALUE_CHARS = 48
"""A longer value is cut (with ``...``) in the ``config`` listing."""


@dataclass(frozen=True)
class Option:
    """One setting: ``name`` is its flat keyword (``port``, as ``Settings(port=...)`` and the
    flags take it), ``group`` the option group holding it (a ``Settings`` attribute such as
    ``"server"``, or a back end's own group class), ``field`` its name there, ``kind`` its type
    name (``str``, ``int``, ``float``, ``bool``)."""

    name: str
    group: str | type
    field: str
    env: str
    flag: str
    default: Any
    doc: str
    secret: bool
    kind: str

    def value(self, settings: Settings) -> Any:
        holder = (
            getattr(settings, self.group) if isinstance(self.group, str) else settings.backend(self.group)
        )
        return getattr(holder, self.field)


def options() -> list[Option]:
    """Every setting in the reference's order: the shared groups, then each back end's own."""
    holders: list[tuple[str | type, type]] = [*GROUPS.items(), *((g, g) for g in PROVIDERS)]
    return [_option(holder, f) for holder, group in holders for f in options_of(group)]


def _option(group: str | type, f: dataclasses.Field[Any]) -> Option:
    return Option(
        name=f.metadata["flat"],
        group=group,
        field=f.name,
        env=f.metadata["env"],
        flag=f.metadata.get("flag", ""),
        default=f.default,
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
    keyed by flat keyword) and, for each option, where its value came from: ``flag``,
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
