"""Functions the pool tests run in Python pool workers (found there by module
and name, as any pool's functions)."""

import os
import signal
import time


def square(x):
    return x * x


def add(a, b):
    return a + b


def idle(x):
    """A task that takes time but no CPU: only heartbeats show its worker alive."""
    time.sleep(0.02)
    return x


def word_lengths(text):
    return {w: len(w) for w in text.split()}


def merge_max(a, b):
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in set(a) | set(b)}


def fails_on_three(x):
    if x == 3:
        raise ValueError(f"three is right out (got {x})")
    return x


def die_once(arg):
    """SIGKILLs its own worker the first time it sees x == 7 (marker: a path)."""
    x, marker = arg
    if x == 7:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return x * 10
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def poison(x):
    """Kills every worker it is given for x == 5."""
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def read_fifo(path):
    """Blocks (without CPU) until someone opens path for writing."""
    with open(path) as f:
        return f.read()


def wait_fifo_if_zero(arg):
    x, path = arg
    return read_fifo(path) if x == 0 else x


def stall_once(arg):
    """x squared; for x == 100, until dir/done exists, says its pid through the
    FIFO dir/pid and blocks (on the FIFO dir/never) until it is killed."""
    x, d = arg
    if x == 100 and not os.path.exists(os.path.join(d, "done")):
        with open(os.path.join(d, "pid"), "w") as f:
            f.write(str(os.getpid()))
        read_fifo(os.path.join(d, "never"))
    return x * x


def pid(_x=None):
    return os.getpid()


def pair(x):
    return (x, str(x))
