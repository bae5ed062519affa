"""sd_notify: never blocking on a socket systemd does not read, watchdog at half WATCHDOG_USEC."""
import os
import socket
import threading

import pytest

from msd.systemd import Notifier


class ManualClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def unread_socket(tmp_path):
    """A bound datagram socket nobody reads: its queue fills after a few datagrams."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield path, sock
    sock.close()


def test_unread_notify_socket_never_blocks_a_send(unread_socket):
    """Regression: a blocking send stalled the supervisor loop once NOTIFY_SOCKET's queue was full."""
    path, _ = unread_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    results = []
    sender = threading.Thread(target=lambda: results.extend(notifier.status(f"line {i}") for i in range(2000)))
    sender.start()
    sender.join(30)
    assert not sender.is_alive(), "a notification waited for the reader"
    assert results[0] is True and results.count(False) > 0      # the queue filled; the rest were dropped
    assert notifier.dropped == results.count(False)


def test_messages_arrive_while_the_socket_is_read(unread_socket):
    path, sock = unread_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.ready("all roles running")
    assert sock.recv(4096).decode().split("\n")[:2] == ["READY=1", "STATUS=all roles running"]


def test_watchdog_pings_at_half_the_interval(unread_socket):
    path, sock = unread_socket
    clock = ManualClock()
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000"}, clock=clock)
    sent = []
    for _ in range(100):                      # 100 loop turns of 0.2 s = 20 s
        sent.append(notifier.watchdog())
        clock.now += 0.2
    assert sent.count(True) == 4              # at 0, 5, 10, 15 s
    assert sock.recv(64) == b"WATCHDOG=1"


@pytest.mark.parametrize("env", [{}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}])
def test_no_watchdog_ping_when_systemd_expects_none(unread_socket, env):
    path, sock = unread_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path), **env})
    assert notifier.watchdog() is False


def test_watchdog_pid_of_this_process_enables_it(unread_socket):
    path, _ = unread_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval_s == 5.0 and notifier.watchdog() is True


def test_off_systemd_everything_is_a_no_op():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.ready("x") is False and notifier.watchdog() is False
