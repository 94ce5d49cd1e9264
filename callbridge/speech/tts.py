"""Embedded, offline, streaming text-to-speech through espeak-ng (ctypes).

The engine is the ``libespeak-ng`` library and data shipped by the ``espeakng-loader`` wheel,
loaded in-process: no subprocess, no network, nothing downloaded. :func:`get_tts` gives the
cached :class:`EspeakTTS` for a voice. ``synthesize(text, on_chunk, should_stop)`` blocks and
hands ~60 ms int16 chunks (at ``sample_rate``, 22,050 Hz) to ``on_chunk`` while espeak is still
producing them; ``stream(text)`` runs it on a worker thread and yields the chunks to the event
loop. espeak-ng is a process-wide singleton: synthesis is serialised by one lock. Text is at
most ``MAX_TEXT_CHARS`` characters (:func:`split_sentences` gives pieces within it).

Text cleaning, aborting, errors and threading: docs/speech.md.
"""

from __future__ import annotations

import asyncio
import ctypes
import re
import threading
import unicodedata
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_TEXT_CHARS",
    "EspeakError",
    "EspeakTTS",
    "get_tts",
    "split_sentences",
]

#: Largest accepted text, in characters after cleaning (see module docstring).
MAX_TEXT_CHARS = 4000
#: Length in ms of the sound buffers espeak hands to the callback (chunk size).
BUFFER_MS = 60
#: Accepted speaking rates in words per minute (espeak-ng's own range).
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450

# espeak_AUDIO_OUTPUT
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options
_INITIALIZE_DONT_EXIT = 0x8000
# espeak_POSITION_TYPE
_POS_CHARACTER = 1
# espeak_Synth flags
_CHARS_UTF8 = 1
# espeak_TextToPhonemes phonememode
_PHONEMES_IPA = 0x02
# espeak_PARAMETER
_P_RATE, _P_PITCH = 1, 3
# espeak_ERROR
_EE_OK, _EE_INTERNAL_ERROR, _EE_BUFFER_FULL, _EE_NOT_FOUND = 0, -1, 1, 2
_ERROR_NAMES = {
    _EE_INTERNAL_ERROR: "EE_INTERNAL_ERROR",
    _EE_BUFFER_FULL: "EE_BUFFER_FULL",
    _EE_NOT_FOUND: "EE_NOT_FOUND",
}
_DEFAULT_PITCH = 50  # espeak's neutral value for espeakPITCH (0..100)

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events);
# Events are not used, so the event list is an opaque pointer.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or reported an error."""


class _Engine:
    """The process-wide espeak-ng library state. Use :func:`_engine`."""

    def __init__(self) -> None:
        import espeakng_loader

        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as exc:  # pragma: no cover - broken install
            raise EspeakError(f"cannot load libespeak-ng: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size (bytes, incl. terminator)
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier (unused)
            ctypes.c_void_p,  # user_data (unused)
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib = lib

        # `path` is the directory *containing* espeak-ng-data (the documented
        # meaning; newer versions also accept the data directory itself).
        data_parent = str(Path(espeakng_loader.get_data_path()).parent)
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data_parent.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        self.sample_rate = rate

        # Only ever touched with `lock` held, from the synthesizing thread.
        self.lock = threading.Lock()
        self._on_chunk: Callable[[np.ndarray], None] | None = None
        self._should_stop: Callable[[], bool] | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._total = 0
        self.applied: tuple[str, int, int] | None = None  # (voice, rate, pitch)
        self.owner: int | None = None  # thread id holding `lock` in synthesize()

        self._callback = _SYNTH_CALLBACK(self._synth_callback)  # keep alive
        lib.espeak_SetSynthCallback(self._callback)

    # -- called with the lock held -------------------------------------------------

    def apply(self, voice: str, rate: int, pitch: int) -> None:
        wanted = (voice, rate, pitch)
        if self.applied == wanted:
            return
        self.applied = None
        err = self.lib.espeak_SetVoiceByName(voice.encode())
        if err != _EE_OK:
            if err == _EE_NOT_FOUND:
                raise ValueError(f"espeak-ng voice not found: {voice!r}")
            raise EspeakError(f"espeak_SetVoiceByName({voice!r}): {_ERROR_NAMES.get(err, err)}")
        for param, value in ((_P_RATE, rate), (_P_PITCH, pitch)):
            err = self.lib.espeak_SetParameter(param, value, 0)
            if err != _EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}): {_ERROR_NAMES.get(err, err)}")
        self.applied = wanted

    def phonemes(self, text: str) -> str:
        """The IPA phonemes of ``text`` in the applied voice, its clauses joined by spaces
        (espeak drops their punctuation)."""
        buf = ctypes.create_string_buffer(text.encode())
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        out = []
        while ptr.value:
            clause = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
            if clause:
                out.append(clause.decode("utf-8", "replace"))
        return " ".join(out)

    def run(
        self,
        data: bytes,
        on_chunk: Callable[[np.ndarray], None],
        should_stop: Callable[[], bool],
    ) -> tuple[int, bool]:
        """Synthesize UTF-8 ``data``; returns (samples delivered, aborted)."""
        self._on_chunk, self._should_stop = on_chunk, should_stop
        self._error, self._stopped, self._total = None, False, 0
        try:
            buf = ctypes.create_string_buffer(data)  # NUL-terminated
            err = self.lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            error, total, stopped = self._error, self._total, self._stopped
        finally:
            self._on_chunk = self._should_stop = None
            self._error = None
        if error is not None:
            raise error
        if err != _EE_OK:
            raise EspeakError(f"espeak_Synth: {_ERROR_NAMES.get(err, err)}")
        return total, stopped

    def _synth_callback(self, wav, numsamples, _events) -> int:
        # Runs in the thread blocked in espeak_Synth. Must never raise: ctypes
        # would print the exception and return garbage to espeak.
        try:
            on_chunk, should_stop = self._on_chunk, self._should_stop  # set together by run()
            if self._stopped or on_chunk is None or should_stop is None:
                return 1
            if should_stop():
                self._stopped = True
                return 1
            if numsamples <= 0 or not wav:  # wav == NULL marks the end
                return 0
            chunk = np.empty(numsamples, dtype=np.int16)
            ctypes.memmove(chunk.ctypes.data, wav, numsamples * 2)
            self._total += numsamples
            on_chunk(chunk)
            return 0
        except BaseException as exc:
            self._error = exc
            self._stopped = True
            return 1


_engine_instance: _Engine | None = None
_engine_init_lock = threading.Lock()


def _engine() -> _Engine:
    global _engine_instance
    if _engine_instance is None:
        with _engine_init_lock:
            if _engine_instance is None:
                _engine_instance = _Engine()
    return _engine_instance


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _get_executor() -> ThreadPoolExecutor:
    # One worker is enough: synthesis is serialised by the engine lock anyway,
    # and this keeps blocked synth jobs out of the loop's default executor.
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak-tts")
    return _executor


def _clean_text(text: str, keep_newlines: bool = False) -> str:
    """Control characters / lone surrogates -> spaces, stripped."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        out.append(" " if cat == "Cc" or cat == "Cs" else ch)
    return "".join(out).strip()


class EspeakTTS:
    """One per process (espeak-ng has global state); thread-safe through an internal lock.

    ``voice`` is an espeak-ng voice name (``"en-us"``, ``"en-gb"``, ``"de"``,
    ...); ``rate_wpm`` is the speaking rate, 80..450 words per minute;
    ``pitch`` is espeak's 0..100 pitch parameter (``None``: the neutral 50).
    Raises :class:`ValueError` for an unknown voice or out-of-range values.
    """

    sample_rate: int

    def __init__(self, voice: str = "en-us", rate_wpm: int = 165, pitch: int | None = None):
        if not isinstance(rate_wpm, int) or not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
            raise ValueError(f"rate_wpm must be an int in {MIN_RATE_WPM}..{MAX_RATE_WPM}, got {rate_wpm!r}")
        if pitch is not None and (not isinstance(pitch, int) or not 0 <= pitch <= 100):
            raise ValueError(f"pitch must be an int in 0..100 or None, got {pitch!r}")
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.pitch = pitch
        self._engine = _engine()
        self.sample_rate = self._engine.sample_rate
        with self._engine.lock:  # validate the voice now rather than on first use
            self._engine.apply(voice, rate_wpm, _DEFAULT_PITCH if pitch is None else pitch)

    def __repr__(self) -> str:
        return (
            f"EspeakTTS(voice={self.voice!r}, rate_wpm={self.rate_wpm}, "
            f"pitch={self.pitch!r}, sample_rate={self.sample_rate})"
        )

    def synthesize(
        self,
        text: str,
        on_chunk: Callable[[np.ndarray], None],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> int:
        """Blocking. Calls on_chunk(int16 ndarray at sample_rate) for each chunk as espeak produces it (streaming), returns total samples. should_stop() is polled from the callback; returning True aborts synthesis promptly (the callback returns 1).

        Returns the number of samples passed to ``on_chunk`` (fewer than the
        full utterance when aborted). Empty/whitespace text returns 0 without
        calling ``on_chunk``; text longer than ``MAX_TEXT_CHARS`` raises
        :class:`ValueError`. Exceptions from ``on_chunk``/``should_stop``
        abort synthesis and are re-raised here.
        """
        clean = _clean_text(text)
        if not clean:
            return 0
        if len(clean) > MAX_TEXT_CHARS:
            raise ValueError(
                f"text too long for one synthesis: {len(clean)} > {MAX_TEXT_CHARS} "
                "characters; split it (split_sentences) first"
            )
        data = clean.encode("utf-8")
        engine = self._engine
        me = threading.get_ident()
        if engine.owner == me:
            raise RuntimeError("synthesize() called re-entrantly (from on_chunk/should_stop)")
        with engine.lock:
            engine.owner = me
            try:
                if should_stop():
                    return 0
                engine.apply(self.voice, self.rate_wpm, _DEFAULT_PITCH if self.pitch is None else self.pitch)
                total, _aborted = engine.run(data, on_chunk, should_stop)
            finally:
                engine.owner = None
        return total

    async def stream(self, text: str, *, loop=None) -> AsyncGenerator[np.ndarray, None]:
        """Runs synthesize() in a worker thread (default executor or a dedicated single-thread executor) and yields int16 chunks as they come, so the asyncio event loop is never blocked; if the consumer stops iterating (aclose / cancellation), synthesis is aborted via should_stop.

        Validation errors (overlong text) and exceptions raised inside
        synthesis are raised from the iteration. Prefer
        ``async with contextlib.aclosing(tts.stream(text)) as chunks:`` when
        the loop may be left early, so the abort is immediate; otherwise it
        happens when the consumer task finishes or the generator is collected.
        """
        clean = _clean_text(text)
        if not clean:
            return
        if len(clean) > MAX_TEXT_CHARS:
            raise ValueError(
                f"text too long for one synthesis: {len(clean)} > {MAX_TEXT_CHARS} "
                "characters; split it (split_sentences) first"
            )
        loop = loop or asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        _END = object()
        # A consumer task that is cancelled (or ends) while this generator is
        # suspended at `yield` only closes the generator later, through the
        # loop's async-generator finalizer; watching the task aborts sooner.
        consumer = asyncio.current_task()

        def should_stop() -> bool:
            return stop.is_set() or (consumer is not None and consumer.done())

        def push(item) -> None:
            # May raise RuntimeError if the loop is closed: that aborts synthesis.
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> int:
            try:
                return self.synthesize(clean, push, should_stop)
            finally:
                if not stop.is_set():
                    try:
                        push(_END)
                    except RuntimeError:  # loop closed; nobody is listening
                        pass

        future = loop.run_in_executor(_get_executor(), work)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                yield item
            await future  # re-raises errors from synthesize
        finally:
            if not future.done():
                stop.set()
                try:
                    await asyncio.shield(future)
                except BaseException:
                    pass
            elif not future.cancelled():
                future.exception()  # mark retrieved


_tts_cache: dict[str, EspeakTTS] = {}
_tts_cache_lock = threading.Lock()


def phonemize(text: str, voice: str = "en-us") -> str:
    """``text`` as espeak-ng's IPA phonemes in ``voice`` (what a Piper voice reads), one
    clause at a time: the clauses are joined by spaces, punctuation dropped."""
    engine = _engine()
    with engine.lock:
        engine.apply(voice, 175, _DEFAULT_PITCH)
        return engine.phonemes(_clean_text(text))


def get_tts(voice="en-us") -> EspeakTTS:
    """The cached process-wide :class:`EspeakTTS` for ``voice`` (default rate/pitch)."""
    tts = _tts_cache.get(voice)
    if tts is None:
        with _tts_cache_lock:
            tts = _tts_cache.get(voice)
            if tts is None:
                tts = _tts_cache[voice] = EspeakTTS(voice)
    return tts


# --------------------------------------------------------------------------- #
# Sentence splitting
# --------------------------------------------------------------------------- #

#: Sentences longer than this are further split at commas.
LONG_SENTENCE_CHARS = 100
#: A comma split is only made where both sides have at least this many chars.
MIN_CLAUSE_CHARS = 20

_CLOSERS = "\"'”’»)]}」』"
# A boundary candidate: terminal punctuation (plus closing quotes/brackets)
# followed by whitespace or end of text; CJK full-width terminators need no
# space; any line break is a boundary too.
_BOUNDARY_RE = re.compile(
    rf"(?:[.!?…]+|;)[{re.escape(_CLOSERS)}]*(?=\s|$)"
    rf"|[。！？；]+[{re.escape(_CLOSERS)}]*"
    r"|\n"
)
_COMMA_RE = re.compile(r"[,，、](?=\s|$)|[，、]")
# Words after which a period does not end the sentence.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "no",
        "e.g",
        "i.e",
        "cf",
        "approx",
        "dept",
        "est",
        "fig",
        "inc",
        "ltd",
        "co",
        "corp",
    ]
)
_WORD_BEFORE_RE = re.compile(r"([\w.]+)$")


def _is_false_period(text: str, start: int, end: int) -> bool:
    """True if the single '.' at text[start] is an abbreviation/initial period."""
    if text[start:end].rstrip(_CLOSERS) != ".":
        return False
    m = _WORD_BEFORE_RE.search(text, 0, start)
    if not m:
        return False
    word = m.group(1).lower()
    if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return True
    nxt = text[end:].lstrip()
    # "e.g. apples", "approx. five": a lower-case continuation is no sentence start.
    return bool(nxt) and nxt[0].islower() and "." in word


def _has_word(s: str) -> bool:
    return any(ch.isalnum() for ch in s)


def _split_long(sentence: str) -> list[str]:
    """Split an overlong sentence at commas into clauses of reasonable size."""
    if len(sentence) <= LONG_SENTENCE_CHARS:
        return [sentence]
    pieces: list[str] = []
    start = 0
    for m in _COMMA_RE.finditer(sentence):
        left = sentence[start : m.end()].strip()
        right = sentence[m.end() :].strip()
        if len(left) >= MIN_CLAUSE_CHARS and len(right) >= MIN_CLAUSE_CHARS:
            pieces.append(left)
            start = m.end()
    pieces.append(sentence[start:].strip())
    return pieces


def _split_hard(piece: str) -> list[str]:
    """Guarantee every piece fits one synthesize() call (MAX_TEXT_CHARS)."""
    out = []
    while len(piece) > MAX_TEXT_CHARS:
        cut = piece.rfind(" ", 0, MAX_TEXT_CHARS + 1)
        if cut <= 0:
            cut = MAX_TEXT_CHARS
        out.append(piece[:cut].strip())
        piece = piece[cut:].strip()
    out.append(piece)
    return out


def split_sentences(text: str) -> list[str]:
    """Split at sentence/clause boundaries (. ! ? ; and long clauses at commas) so a caller can start speaking the first sentence while the rest is produced; never returns empty strings.

    Rules: a boundary is ``.``, ``!``, ``?``, ``…`` or ``;`` (runs such as
    ``?!`` or ``...`` and trailing closing quotes/brackets stay with the
    sentence) followed by whitespace or the end, a CJK full-width terminator,
    or a line break. Decimals (``3.5``), abbreviations (``Dr.``, ``e.g.``) and
    single-letter initials (``J. Smith``) are not boundaries. Sentences longer
    than ``LONG_SENTENCE_CHARS`` are split after commas where both parts have
    at least ``MIN_CLAUSE_CHARS`` characters. Pieces without any letter or
    digit (stray punctuation) are merged into a neighbour. Every piece is
    stripped, non-empty and at most ``MAX_TEXT_CHARS`` long. Control
    characters are treated as whitespace.
    """
    text = _clean_text(text, keep_newlines=True)
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for m in _BOUNDARY_RE.finditer(text):
        if m.group() != "\n" and _is_false_period(text, m.start(), m.end()):
            continue
        sentences.append(text[start : m.end()])
        start = m.end()
    sentences.append(text[start:])

    pieces: list[str] = []
    pending = ""  # punctuation-only text waiting for a sentence to join
    for s in sentences:
        s = " ".join(s.split())  # collapse whitespace, incl. former newlines
        if not s:
            continue
        if not _has_word(s):
            if pieces:
                pieces[-1] = pieces[-1] + s if s[0] in ".!?…;,:" else f"{pieces[-1]} {s}"
            else:
                pending = f"{pending} {s}".strip()
            continue
        if pending:
            s = f"{pending} {s}"
            pending = ""
        for clause in _split_long(s):
            pieces.extend(p for p in _split_hard(clause) if p)
    if pending:  # the whole text was punctuation
        pieces.extend(p for p in _split_hard(pending) if p)
    return pieces
