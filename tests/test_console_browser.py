"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright;
no browser download): the softphone talks to the agent with Chromium's fake microphone
playing a WAV synthesised by the embedded TTS, and the call's timeline fills in.

Needs ``/usr/bin/chromium`` (``.ci/run`` installs it when missing). Not skipped when it is
absent: the test fails and says so."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Page, async_playwright, expect

from callbridge.cli import DEMO_LINES
from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
from callbridge.codecs.resample import StreamingResampler
from callbridge.sim.caller import SimulatedCall
from callbridge.sim.wavio import write_wav
from callbridge.speech.tts import EspeakTTS

from .stripproxy import StripProxy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
RATE = 48000  # Chromium's fake capture resamples the file to the device rate; 48 kHz avoids that
DOCS_SHOT = Path(__file__).resolve().parent.parent / "docs" / "console.png"


def caller_wav(path: Path) -> Path:
    """5 s of silence (the greeting plays), a request, a pause for the reply, a confirmation."""
    tts = EspeakTTS(voice="en-us", rate_wpm=150)

    def say(text: str) -> np.ndarray:
        chunks: list[np.ndarray] = []
        tts.synthesize(text, chunks.append)
        return StreamingResampler(tts.sample_rate, RATE).process(np.concatenate(chunks))

    def silence(s: float) -> np.ndarray:
        return np.zeros(int(RATE * s), np.int16)

    write_wav(
        path,
        np.concatenate([silence(5), say(DEMO_LINES[0]), silence(6), say(DEMO_LINES[1]), silence(8)]),
        RATE,
    )
    return path


def launch_args(wav: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]


@pytest.fixture
async def browser(tmp_path):
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium (the console's browser test needs it)"
        )
    wav = caller_wav(tmp_path / "caller.wav")
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=launch_args(wav),
            viewport={"width": 1400, "height": 820},
            headless=True,
        )
        yield context
        await context.close()


async def console_page(browser) -> tuple[Page, list[str]]:
    """The browser's page, and the list its script errors are collected in."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


async def test_softphone_call_fills_the_console(start_server, browser, tmp_path):
    url = await start_server()
    page, errors = await console_page(browser)
    await page.goto(f"{url}/console")
    await expect(page.locator("#feed")).to_have_text("live")
    await page.click("#call-button")
    await expect(page.locator("#phone-state")).to_have_text("live", timeout=10_000)
    conversation = page.locator("#conversation")
    await expect(conversation.locator(".bubble.agent").first).to_contain_text(
        "thanks for calling", timeout=10_000
    )
    caller = conversation.locator(".bubble.caller:not(.partial)").first
    await expect(caller).to_contain_text("appointment", timeout=20_000)
    await expect(conversation.locator(".bubble.agent").nth(1)).to_contain_text(
        "Shall I book it", timeout=10_000
    )
    await expect(page.locator("#turns .turn").first).to_be_visible()
    await expect(conversation.locator(".bubble.agent").nth(2)).to_contain_text("booked", timeout=20_000)
    await expect(page.locator("tr.call td").nth(3)).to_have_text("2")  # the list: 2 answered turns
    await page.wait_for_timeout(1500)  # a little of the reply on the level meters
    await page.screenshot(path=str(tmp_path / "console.png"))
    if os.environ.get("CALLBRIDGE_UPDATE_DOCS") == "1":  # refresh the screenshot in docs/console.md
        await page.screenshot(path=str(DOCS_SHOT))
    stats = await page.evaluate("window.callbridgeSoftphone.stats")
    assert stats["framesSent"] > 500 and stats["framesReceived"] > 100 and stats["marksEchoed"] > 5
    await page.click("#hangup-button")
    await expect(page.locator("tr.call td").nth(1)).to_have_text("ended", timeout=5_000)
    await expect(conversation.locator(".marker").last).to_contain_text("call ended: twilio stop")
    assert errors == []


async def test_browser_g711_is_bit_exact(start_server, browser):
    url = await start_server()
    page, _ = await console_page(browser)
    await page.goto(f"{url}/console")
    encoded, decoded = await page.evaluate(
        """async () => {
            const g = await import('/console/static/g711.js');
            const enc = [];
            for (let x = -32768; x < 32768; x++) enc.push(g.ulawEncodeSample(x));
            const dec = [];
            for (let c = 0; c < 256; c++) dec.push(g.ulawDecodeSample(c));
            // One base64 string, not 65,536 numbers: decoding a huge array on the
            // test's event loop would stall the server it hosts.
            let s = '';
            for (const b of enc) s += String.fromCharCode(b);
            return [btoa(s), dec];
        }"""
    )
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert base64.b64decode(encoded) == ulaw_encode(every)
    assert decoded == ulaw_decode(bytes(range(256))).tolist()


async def test_console_behind_a_path_stripping_proxy(
    browser, start_server
):  # the WAV first: off the watched loop
    """``PUBLIC_URL=http://proxy/voice-bridge``, the proxy stripping ``/voice-bridge``: the
    page, its scripts, the live feed and the softphone's socket all go through it."""
    proxy = StripProxy("/voice-bridge")
    public = await proxy.start() + "/voice-bridge"
    try:
        proxy.backend = await start_server(public_url=public)
        page, errors = await console_page(browser)
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url))
        await page.goto(f"{public}/console")
        await expect(page.locator("#feed")).to_have_text("live")
        await page.click("#call-button")
        await expect(page.locator("#phone-state")).to_have_text("live", timeout=10_000)
        conversation = page.locator("#conversation")
        await expect(conversation.locator(".bubble.agent").first).to_contain_text(
            "thanks for calling", timeout=10_000
        )
        await page.click("#hangup-button")
        await expect(page.locator("tr.call td").nth(1)).to_have_text("ended", timeout=5_000)
        assert errors == []
        assert outside and all(u.startswith(public + "/") for u in outside if u.startswith("http")), outside
    finally:
        await proxy.stop()


async def test_the_empty_pane_says_what_to_do_until_a_call_is_chosen(browser, start_server):  # WAV first
    url = await start_server(greeting="Hi.")
    page, _ = await console_page(browser)
    await page.goto(f"{url}/console")
    await expect(page.locator("#feed")).to_have_text("live")
    hint = page.locator("#hint")
    await expect(hint).to_be_visible()
    await expect(hint).to_contain_text("Press Call the agent")
    await expect(hint).to_contain_text("callbridge call")
    await expect(page.locator("#detail")).to_be_hidden()
    call = SimulatedCall(url, hold_s=3.0)
    running = asyncio.create_task(call.run())
    try:
        row = page.locator(f'tr.call[data-sid="{call.call_sid}"]')
        await expect(row).to_be_visible(timeout=10_000)
        await expect(hint).to_contain_text("Click a call in the list")
        await row.click()
        await expect(hint).to_be_hidden()
        await expect(page.locator("#detail")).to_be_visible()
        await expect(page.locator("#call-title")).to_have_text(call.call_sid)
    finally:
        await running


async def test_console_transfers_and_hangs_up_a_live_call(browser, start_server):
    url = await start_server(greeting="Hi.", transfer_to="+15557654321")  # no Twilio credentials
    page, errors = await console_page(browser)
    await page.goto(f"{url}/console")
    await expect(page.locator("#feed")).to_have_text("live")
    call = SimulatedCall(url, hold_s=30.0, max_s=40.0)
    running = asyncio.create_task(call.run())
    try:
        row = page.locator(f'tr.call[data-sid="{call.call_sid}"]')
        await expect(row).to_be_visible(timeout=10_000)
        await row.click()
        actions = page.locator("#call-actions")
        await expect(actions).to_be_visible()
        await page.click("#transfer-button")  # the bridge has no Twilio REST API: refused, said so
        await expect(page.locator("#action-state")).to_contain_text("400", timeout=5_000)
        await expect(page.locator("#action-state")).to_contain_text("TWILIO_ACCOUNT_SID")
        await page.click("#end-call-button")
        await expect(row.locator("td").nth(1)).to_have_text("ended", timeout=10_000)
        await expect(page.locator("#conversation .marker").last).to_contain_text(
            "call ended: the operator hung up"
        )
        await expect(actions).to_be_hidden()
        result = await asyncio.wait_for(running, 20)
    finally:
        running.cancel()
    assert result.ended_by == "hangup" and errors == []
