"""Fuzzing, the short campaign (CI): every parser with a few hundred generated inputs,
the webhook and the media socket of a real gateway over real loopback sockets while a
bystander call streams through the same gateway undisturbed. The long campaign is
``python bench/fuzz.py --examples N``; both use ``callbridge/testing/fuzz_targets.py``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from callbridge.testing import fuzz_targets as ft

CI = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SOCKETS = settings(CI, max_examples=120)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ft.TARGETS))
def test_parser_never_fails_but_with_its_own_error(name):
    strategy, check = ft.TARGETS[name]
    CI(given(strategy)(check))()


@pytest.fixture(scope="module")
def gateway():
    gw = ft.GatewayThread()
    yield gw
    gw.close()


@pytest.mark.slow
def test_webhook_forms_over_http(gateway):
    @SOCKETS
    @given(ft.forms)
    def forms(form):
        ft.check_webhook_form(gateway, form)

    @SOCKETS
    @given(ft.raw_bodies)
    def raw(body):
        ft.check_webhook_raw(gateway, body)

    forms()
    raw()
    assert gateway.health()["status"] == "ok"


@pytest.mark.slow
@pytest.mark.alone
def test_media_socket_messages_leave_other_calls_alone(gateway):
    bystander = ft.Bystander(gateway)

    @SOCKETS
    @given(ft.media_inputs())
    def sockets(case):
        ft.check_media_socket(gateway, *case)

    sockets()
    sent, echoed, worst_gap = bystander.finish()
    assert sent > 50 and echoed >= sent - 5, (sent, echoed)
    assert worst_gap < 1.0, worst_gap
    health = gateway.health()
    assert health["status"] == "ok"
