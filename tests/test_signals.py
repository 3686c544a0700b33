"""The shared signal-handler block: installs the handler, restores the previous ones."""

import os
import signal
import threading

import pytest

from entropyrl._signals import handling

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def test_the_handler_gets_the_signals_inside_the_block_and_the_previous_ones_come_back():
    got = []

    def handler(signum, frame):
        got.append(signum)

    before = [signal.getsignal(s) for s in SIGNALS]
    with handling(SIGNALS, handler):
        assert [signal.getsignal(s) for s in SIGNALS] == [handler, handler]
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
    assert sorted(got) == sorted(SIGNALS)
    assert [signal.getsignal(s) for s in SIGNALS] == before


def test_an_exception_in_the_block_restores_the_previous_handlers():
    before = [signal.getsignal(s) for s in SIGNALS]
    with pytest.raises(RuntimeError, match="boom"), handling(SIGNALS, lambda s, f: None):
        raise RuntimeError("boom")
    assert [signal.getsignal(s) for s in SIGNALS] == before


def test_off_the_main_thread_the_signals_are_left_alone():
    before = [signal.getsignal(s) for s in SIGNALS]
    seen, errors = [], []

    def body():
        try:
            with handling(SIGNALS, lambda s, f: None):
                seen.append([signal.getsignal(s) for s in SIGNALS])
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert errors == [] and seen == [before]
    assert [signal.getsignal(s) for s in SIGNALS] == before
