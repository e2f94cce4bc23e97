"""deploy.supernode: Flower's SuperNode with a shorter idle back-off (the only change to Flower's loop)."""

from __future__ import annotations

import time

import pytest

from deploy import supernode as sn


def test_idle_clock_shortens_only_the_idle_back_off(monkeypatch):
    slept = []
    monkeypatch.setattr(sn._time, "sleep", slept.append)
    clock = sn._IdleClock(0.5)
    clock.sleep(3)
    clock.sleep(0.5)  # Flower's reply poll stays as it is
    clock.sleep(3.5)
    assert slept == [0.5, 0.5, 3.5]
    assert clock.time is time.time and clock.monotonic is time.monotonic


def test_idle_poll_from_env_is_validated():
    assert sn.idle_poll_from_env({}) == 3.0
    assert sn.idle_poll_from_env({sn.IDLE_ENV: "1"}) == 1.0
    for bad in ("0", "-1", "nan", "inf", "soon", "120"):
        with pytest.raises(SystemExit, match=sn.IDLE_ENV):
            sn.idle_poll_from_env({sn.IDLE_ENV: bad})


def test_patch_applies_to_the_installed_flower_and_only_there(monkeypatch):
    from flwr.supernode import start_client_internal as sci

    real = sci.time
    try:
        assert sn.patch_idle_poll(0.7)  # Flower 1.41's loop has exactly one `time.sleep(3)`
        assert isinstance(sci.time, sn._IdleClock) and sci.time.idle_s == 0.7
    finally:
        sci.time = real
    monkeypatch.setattr(sn.inspect, "getsource", lambda obj: "while True:\n    time.sleep(5)\n")
    assert not sn.patch_idle_poll(0.7)  # another Flower: left alone
    assert sci.time is real
