"""herd for Python: masters and workers over herd's wire (proto/PROTOCOL.md),
standard library only.

    import herd
    with herd.connect() as m:
        w = m.spawn("/usr/libexec/herd/herd-testworker")
        with w.connect() as c:
            print(c.call("sum", {"n": 10}))
"""

from ._master import (Master, Stream, Worker, WorkerConnection, connect, is_failure,
                      socket_path)
from ._pool import Pool, Progress, TaskError
from ._proto import HerdError, resolve_settings
from ._worker import WorkerFailure, fail, oneway, serve

__all__ = ["HerdError", "Master", "Stream", "Worker", "WorkerConnection", "connect",
           "WorkerFailure", "fail", "is_failure", "oneway", "resolve_settings", "serve",
           "socket_path", "Pool", "Progress", "TaskError"]
