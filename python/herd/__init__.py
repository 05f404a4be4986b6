"""herd for Python: masters and workers over herd's wire (proto/PROTOCOL.md),
standard library only. :mod:`herd.aio` has the master API for asyncio.

    import herd
    with herd.connect() as m:
        w = m.spawn("/usr/libexec/herd/herd-testworker")
        with w.connect() as c:
            print(c.call("sum", {"n": 10}))
"""

from . import aio
from ._master import (Master, Sink, Stream, Worker, WorkerConnection, connect, is_failure,
                      socket_path)
from ._pool import Pool, Progress, TaskError
from ._proto import HerdError, resolve_settings
from ._worker import (SinkItems, WorkerFailure, call_later, conn_state, fail, log, oneway,
                      serve, sink, sleep, state, worker_state)

__all__ = ["HerdError", "Master", "Pool", "Progress", "Sink", "SinkItems", "Stream", "TaskError",
           "Worker", "WorkerConnection", "WorkerFailure", "aio", "call_later", "conn_state",
           "connect", "fail", "is_failure", "log", "oneway", "resolve_settings", "serve", "sink",
           "sleep", "socket_path", "state", "worker_state"]
