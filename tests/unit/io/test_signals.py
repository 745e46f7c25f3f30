"""The signal rules of ``automodel_spec.io.signals``: held signals wait, handlers remember, other programs keep theirs."""

from __future__ import annotations

import signal
import sys

import pytest

from automodel_spec.io import signals


@pytest.fixture
def clean(monkeypatch):
    """No signal seen yet, and SIGINT / SIGTERM's handlers restored after the test."""
    monkeypatch.setattr(signals, "_terminated", False)
    monkeypatch.setattr(signals, "_interrupted", False)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_a_held_signal_is_delivered_when_the_block_ends(clean):
    signals.raise_on_signals()
    reached_the_end = False
    with pytest.raises(signals.Terminated):
        with signals.signals_held():
            signal.raise_signal(signal.SIGTERM)
            reached_the_end = True
    assert reached_the_end


@pytest.mark.parametrize(("sig", "raised"), [(signal.SIGTERM, signals.Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_whose_exception_was_lost_is_raised_again(clean, sig, raised):
    signals.raise_signal_seen()  # none seen: nothing happens
    signals.raise_on_signals()
    try:
        signal.raise_signal(sig)
    except KeyboardInterrupt:
        pass  # swallowed, as a weakref callback or native code does
    with pytest.raises(raised) as seen:
        signals.raise_signal_seen(ValueError("raised in its place"))
    assert isinstance(seen.value.__cause__, ValueError)
    assert isinstance(seen.value, signals.Terminated) == (sig == signal.SIGTERM)


def test_only_a_recipe_as_the_program_holds_signals(clean, monkeypatch, tmp_path):
    mask = signal.pthread_sigmask
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(tmp_path / "serve.py"), raising=False)
    signals.hold_signals_while_a_recipe_starts()
    assert signal.SIGTERM not in mask(signal.SIG_BLOCK, set())  # a test (or a user's script) keeps its own
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(signals._RECIPES / "serve.py"))
    try:
        signals.hold_signals_while_a_recipe_starts()
        assert {signal.SIGINT, signal.SIGTERM} <= mask(signal.SIG_BLOCK, set())
    finally:
        signals.release_signals()
    assert not {signal.SIGINT, signal.SIGTERM} & mask(signal.SIG_BLOCK, set())
