"""Option groups: one component's settings as a small frozen dataclass.

A group lists each setting once with ``option(default, env, doc)`` and checks its values
in ``__post_init__``, raising ``ConfigError`` that names the variable::

    @dataclass(frozen=True)
    class LimitOptions:
        title: ClassVar[str] = "Limits"
        inbound_rate: float = option(3.0, "INBOUND_RATE", "Inbound audio per call ...")

        def __post_init__(self) -> None:
            in_range("INBOUND_RATE", self.inbound_rate, 0, 1000)

``config.Settings`` composes the groups and reads them from the environment; a setting's
flat keyword (``Settings(inbound_rate=3)``) is its variable in lower case unless the
option names another (``flat=``).
"""

from __future__ import annotations

from dataclasses import Field, field, fields
from typing import Any, ClassVar, Protocol


class ConfigError(ValueError):
    """A setting that does not parse or is out of range; the message names the variable."""


class OptionGroup(Protocol):
    """What ``config.Settings`` needs of a group: a frozen dataclass with a title."""

    title: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]


def option(default: Any, env: str, doc: str, *, flag: str = "", secret: bool = False, flat: str = "") -> Any:
    """One setting of a group: its default, environment variable, ``serve`` flag (if any),
    documentation (rendered into the configuration reference), and whether it is a secret."""
    meta: dict[str, Any] = {"env": env, "doc": doc, "flat": flat or env.lower()}
    if flag:
        meta["flag"] = flag
    if secret:
        meta["secret"] = True
    return field(default=default, metadata=meta)


def options_of(group: type[OptionGroup] | OptionGroup) -> tuple[Field[Any], ...]:
    """The settings a group declares, in order."""
    return fields(group)


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def in_range(env: str, value: float, low: float, high: float) -> None:
    check(low <= value <= high, f"{env} must be {low}..{high}, not {value}")


def one_of(env: str, value: str, choices: tuple[str, ...]) -> None:
    check(value in choices, f"{env} must be one of {', '.join(choices)}, not {value!r}")


def http_url(env: str, value: str) -> None:
    check(value.startswith(("http://", "https://")), f"{env} must start with http:// or https://: {value!r}")


def parse(f: Field[Any], raw: str) -> Any:
    """The value of setting ``f`` from its environment text (``ValueError`` if it doesn't parse)."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if kind == "bool":
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    return {"str": str, "int": int, "float": float}[kind](raw)
