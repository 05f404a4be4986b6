"""Pools: N supervised workers and parallel map, map-reduce and find-first over
them that survive crashes, with libherd's pool semantics (herd/pool.h) and
the shape of ``multiprocessing.Pool`` and ``concurrent.futures``.

One engine thread per pool owns its herdd session and its worker
connections; the caller's methods hand it jobs and wait on a condition.
Tasks travel in batches (``herd.batch``, PROTOCOL.md 6.6), a window of them
in flight per worker. A worker that dies is replaced after a backoff and
every task it held runs again: a task in flight on it becomes a suspect,
run alone next, and after ``retries`` deaths it is reported as
``task_crashed`` (``timeout`` when it overran ``task_timeout``); a map-reduce
with a worker combine folds on the workers and counts a task once a
``herd.take`` covering its fold came back, so no result is lost or counted
twice.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import select
import sys
import threading
import time
from typing import (Any, Callable, Deque, Dict, Iterable, Iterator, List, NamedTuple,
                    Optional, Tuple)

from . import _startapp
from ._master import DEFAULT_INHERIT_ENV, Master, Worker, connect, spawn_params
from ._proto import HerdError

MAX_CHUNKSIZE = 1024  # the automatic chunksize's bound, as libherd's
DEFAULT_WINDOW = 2  # batches in flight per worker
DEATH_EVENTS = frozenset({"exited", "crashed", "failed", "heartbeat_lost", "killed", "stopped",
                          "spawn_timeout", "init_failed", "host_lost"})
EVENT_WAIT = 3.0  # how long a lost connection waits for its worker's end event
PROGRESS_EVERY = 0.1


class Progress(NamedTuple):
    """What a progress callback gets: tasks done (succeeded), failed, retried
    (dispatches redone because a worker died), total (None while an iterator is
    not exhausted) and rate (tasks done per second since the job started)."""
    done: int
    failed: int
    retried: int
    total: Optional[int]
    rate: float


class TaskError(HerdError):
    """A task failed: its handler raised (``function_failed`` with the worker's
    traceback), it killed every worker it ran on (``task_crashed``, with the
    crash's event) or it overran the pool's task timeout (``timeout``).
    ``index`` is its position in the input, ``item`` its argument."""

    def __init__(self, name: str, message: str, index: int, item: Any,
                 data: Optional[Dict[str, Any]] = None, code: Optional[int] = None) -> None:
        self.index = index
        self.item = item
        self.traceback: Optional[str] = (data or {}).get("traceback")
        text = f"task {index} ({_short(item)}): {message}"
        if self.traceback:
            text += "\n\nThe worker's traceback:\n" + self.traceback.rstrip()
        super().__init__(name, text, code, dict(data or {}, index=index))


def _short(item: Any, limit: int = 200) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- jobs ----

class _Job:
    """One map, reduce, find or call: its tasks, their outcomes and its waiters."""

    def __init__(self, pool: "Pool", kind: str, function: str, items: Iterable[Any],
                 wrap: Callable[[Any], Any],
                 chunksize: Optional[int], progress: Optional[Callable[[Progress], None]]) -> None:
        self.pool = pool
        self.kind = kind  # map, unordered, reduce, find, call
        self.function = function
        self.wrap = wrap
        self.progress = progress
        try:
            self.total: Optional[int] = len(items)  # type: ignore[arg-type]
        except TypeError:
            self.total = None
        if chunksize is None:
            chunksize = 1 if self.total is None else \
                max(1, min(MAX_CHUNKSIZE, -(-self.total // (4 * pool.size))))
        self.chunksize = chunksize
        # A list is sliced, anything else read as tasks are needed.
        self.seq = items if isinstance(items, (list, tuple, range)) else None
        self.source: Iterator[Any] = iter(items)
        self.next_index = 0
        self.exhausted = False
        self.suspects: Deque[Tuple[int, Any]] = collections.deque()  # run alone
        self.redo: Deque[Tuple[int, Any]] = collections.deque()  # folds a dead worker lost
        self.deaths: Dict[int, int] = {}
        self.outstanding = 0
        self.done = self.failed = self.retried = 0
        self.started = time.monotonic()
        self.last_progress = 0.0
        self.finished = False
        self.error: Optional[BaseException] = None
        self.value: Any = None
        self.results: Dict[int, Any] = {}  # imap: by index
        self.out: Optional[List[Any]] = None  # map: the answer, filled in place
        self.queue: Deque[Any] = collections.deque()  # unordered: as they come
        self.skip_failed = False
        self.combine: Optional[Callable[[Any, Any], Any]] = None
        self.worker_combine: Optional[str] = None
        self.has_value = False
        self.predicate: Callable[[Any], bool] = lambda r: r is not None
        self.future: Optional[concurrent.futures.Future] = None
        self.number = 0
        self.chunked = self.star = False

    def pending(self) -> bool:
        return bool(self.suspects or self.redo) or not self.exhausted

    def take(self, n: int) -> Tuple[Any, List[Any]]:
        """Up to n fresh or redone tasks: (indices, params); indices a range when fresh."""
        if self.redo:
            got = [self.redo.popleft() for _ in range(min(n, len(self.redo)))]
            return [i for i, _ in got], [p for _, p in got]
        lo = self.next_index
        params: List[Any] = []
        try:
            # Whole chunks, not items, are read and wrapped: tiny tasks stay cheap.
            chunk = self.seq[lo:lo + n] if self.seq is not None else \
                list(itertools.islice(self.source, n))
            self.exhausted = len(chunk) < n or (self.seq is not None and lo + n >= len(self.seq))
            params = self.wrap(chunk)
        except Exception as e:
            self.exhausted = True
            self.pool._end(self, e)
        if self.exhausted and self.total is None:
            self.total = lo + len(params)
        self.next_index += len(params)
        return range(lo, lo + len(params)), params

    # Outcomes, on the engine thread with the pool's lock held.

    def succeeded(self, indices: Any, values: List[Any]) -> None:
        self.done += len(values)
        self.outstanding -= len(values)
        if self.kind == "map" and self.out is not None:
            if type(indices) is range:
                self.out[indices.start:indices.stop] = values
            else:
                for i, v in zip(indices, values):
                    self.out[i] = v
        elif self.kind == "map":
            self.results.update(zip(indices, values))
            self.pool._waking = True
        elif self.kind == "unordered":
            self.queue.extend(values)
            self.pool._waking = True
        elif self.kind == "reduce":
            for v in values:
                self.fold(v)
        elif self.kind == "find":
            for i, v in zip(indices, values):
                if self.predicate(v):
                    self.value = (i, v)
                    return self.pool._end(self, None)
        elif self.kind == "call":
            self.value = values[0]

    def fold(self, value: Any) -> None:
        assert self.combine is not None
        self.value = self.combine(self.value, value) if self.has_value else value
        self.has_value = True

    def task_failed(self, index: int, item: Any, error: TaskError) -> None:
        self.failed += 1
        self.outstanding -= 1
        if not self.skip_failed:
            return self.pool._end(self, error)
        if self.kind == "map" and self.out is None:
            self.results[index] = None

    def complete(self) -> bool:
        return self.exhausted and self.outstanding == 0 and not self.suspects and not self.redo


# ---- workers ----

class _Flight:
    __slots__ = ("job", "indices", "params", "acc", "deadline", "alone")

    def __init__(self, job: _Job, indices: Any, params: List[Any], acc: Optional[str]) -> None:
        self.job = job
        self.indices = indices
        self.params = params
        self.acc = acc
        self.deadline: Optional[float] = None
        self.alone = False  # a suspect's: nothing else goes to its worker meanwhile


class _Slot:
    """One worker place of the pool: spawning, ready, dying or waiting to respawn."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.gen = 0
        self.state = "idle"
        self.worker: Optional[Worker] = None
        self.conn: Any = None
        self.spawn_rid: Optional[int] = None
        self.flights: Dict[int, _Flight] = {}
        self.folded: Dict[_Job, List[Tuple[int, Any]]] = {}  # acknowledged, not yet taken
        self.takes: Dict[int, Tuple[_Job, List[Tuple[int, Any]]]] = {}
        self.respawn_at = 0.0
        self.dying_since = 0.0
        self.timed_out: Optional[int] = None
        self.out = bytearray()  # requests not yet written

    def busy(self) -> int:
        return len(self.flights) + len(self.takes)


# ---- the pool ----

class Pool:
    """A pool of supervised herd workers.

    ``Pool(4)`` runs plain Python functions: its workers are this script run
    again (as multiprocessing's spawn method does: the main module is
    imported as ``__mp_main__``, so start the pool under ``if __name__ ==
    "__main__":``). Functions are found by module and qualified name;
    arguments and results travel pickled, a chunk of them as one pickle, as
    multiprocessing's do; with ``pickle=False`` as JSON (tuples arrive as
    lists, dict keys as strings). :meth:`map_reduce`'s folds on the workers
    (herd.batch) are JSON either way.
    ``Pool(4, executable=path)`` runs any herd worker (C or Python): ``func``
    is then a function name and each item its JSON params (an object, an
    array or null).

    Options: ``window`` batches in flight per worker; ``retries`` deaths a task
    may cause before it fails as ``task_crashed``; ``retry_failed`` retries a
    task whose handler failed too; ``task_timeout`` (seconds) kills the worker
    of a task that overran it; ``max_restarts`` deaths in a row with no task
    done before the pool gives up (``crash_loop``); ``skip_failed`` lets a map
    go on past failed tasks (None in their place); ``args``, ``init``,
    ``env``, ``cwd``, ``settings`` are the workers' spawn options.

    The pool is usable once its first worker is ready (:meth:`wait_ready`
    waits for all). One engine thread per pool drives it; ``progress``,
    ``combine`` and ``predicate`` callbacks run there, and must not wait on
    the pool. ``deaths`` and ``spawns`` count worker deaths and spawns.

    herdd supervises the workers as any: one that neither heartbeats nor uses
    CPU for ``heartbeat_timeout_ms`` (10 s; ``settings``) is hung and killed,
    and a task that blocks that long without computing (a sleep, a stalled
    read) counts as a crash of its worker.
    """

    def __init__(self, processes: Optional[int] = None,
                 initializer: Optional[Callable[..., Any]] = None, initargs: Iterable[Any] = (),
                 *, executable: Optional[str] = None, args: Optional[List[str]] = None,
                 init: Any = None, env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None, pickle: Optional[bool] = None,
                 window: int = DEFAULT_WINDOW,
                 retries: int = 3, retry_failed: bool = False,
                 task_timeout: Optional[float] = None, max_restarts: Optional[int] = None,
                 skip_failed: bool = False, name: Optional[str] = None,
                 socket: Optional[str] = None,
                 settings: Optional[Dict[str, int]] = None) -> None:
        _startapp.check_not_bootstrapping()
        self.size = processes or len(os.sched_getaffinity(0))
        if self.size < 1 or window < 1 or retries < 0:
            raise ValueError("processes, window must be at least 1, retries at least 0")
        self.executable = executable
        # A pool of this script's own functions pickles by default, as
        # multiprocessing; an executable's workers take JSON.
        self.pickle = not executable and pickle is not False
        self._pickle_asked = bool(pickle)
        self.window = window
        self.retries = retries
        self.retry_failed = retry_failed
        self.task_timeout = task_timeout
        self.max_restarts = max(max_restarts or 10, 2 * self.size)
        self.skip_failed = skip_failed
        self.name = name or f"{os.path.basename(sys.argv[0] or 'python')}-pool"
        self._spawn_opts = self._spawn_options(initializer, initargs, args, init, env, cwd,
                                               settings)
        self.deaths = self.spawns = 0
        self._last_death = "none"
        self._consecutive = 0
        self._ever_ready = False
        # A session of its own: the engine thread is its only user.
        self._master: Master = connect(socket, name=self.name)
        self._master.on_event(self._on_event)
        self._ends: Dict[str, Dict[str, Any]] = {}
        self._slots = [_Slot(k) for k in range(self.size)]
        self._jobs: List[_Job] = []
        self._new_jobs: List[_Job] = []
        self._jobs_made = 0
        self._cond = threading.Condition()
        self._state = "running"  # closing (no new jobs), terminating, gone
        self._error: Optional[BaseException] = None
        self._waking = False  # something a waiter may wait for happened
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._engine, name=f"herd-pool-{self.name}",
                                        daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._ever_ready or self._state == "gone")
        if not self._ever_ready:
            self._thread.join()
            raise self._error or HerdError("crash_loop", "no worker could start")

    def _spawn_options(self, initializer: Any, initargs: Iterable[Any], args: Any, init: Any,
                       env: Any, cwd: Any, settings: Any) -> Dict[str, Any]:
        opts: Dict[str, Any] = {"env": dict(env or {}), "settings": dict(settings or {})}
        if cwd:
            opts["cwd"] = cwd
        if self.executable:
            if initializer:
                raise TypeError("initializer is for pools of Python functions; "
                                "an executable's pool takes init")
            opts.update(path=self.executable, args=args, init=init,
                        inherit_env=DEFAULT_INHERIT_ENV)
        else:
            spec = _startapp.main_spec()
            if initializer:
                spec["initializer"] = _startapp.reference(initializer, "initializer")
                spec["initargs"] = list(initargs)
            # A worker sees what the master sees, as multiprocessing's.
            opts.update(path=sys.executable, args=_startapp.argv(), init=spec, inherit_env=True)
        return opts

    # ---- the caller's side ----

    def _function(self, func: Any, star: bool, chunked: bool) -> Tuple[str, Callable[[Any], Any]]:
        """The worker function's name and how a chunk of items becomes their params."""
        if self.executable:
            if not isinstance(func, str):
                raise TypeError("a pool of an executable calls its functions by name (a str)")
            return func, list
        ref = func if isinstance(func, str) else _startapp.reference(func)
        if self.pickle and chunked:
            return _startapp.PICKLE_PREFIX + ref, list
        wrap_star = lambda xs: [list(x) for x in xs]  # noqa: E731
        if chunked:  # the items themselves, in one chunk call (_startapp._run_chunk)
            return _startapp.CHUNK_PREFIX + ref, wrap_star if star else list
        # A call's params are its arguments: zip makes (x,) of each x at C speed.
        return ref, wrap_star if star else lambda xs: list(zip(xs))

    def _start(self, kind: str, func: Any, items: Iterable[Any], chunksize: Optional[int],
               progress: Optional[Callable[[Progress], None]], star: bool = False,
               **attrs: Any) -> _Job:
        # A Python function's tasks go as chunk calls, but for worker-side folds.
        chunked = not self.executable and \
            not (kind == "reduce" and attrs.get("worker_combine"))
        name, wrap = self._function(func, star, chunked)
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        job = _Job(self, kind, name, items, wrap, chunksize, progress)
        job.chunked, job.star = chunked, star
        job.skip_failed = self.skip_failed
        for k, v in attrs.items():
            setattr(job, k, v)
        with self._cond:
            if self._state != "running":
                raise ValueError("Pool not running")
            self._jobs_made += 1
            job.number = self._jobs_made
            self._new_jobs.append(job)
        self._wake()
        return job

    def _wait(self, job: _Job) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: job.finished)
        if job.error:
            raise job.error
        return job.value

    def map(self, func: Any, iterable: Iterable[Any], chunksize: Optional[int] = None,
            progress: Optional[Callable[[Progress], None]] = None) -> List[Any]:
        """``[func(x) for x in iterable]`` over the workers, in input order.
        A failed task raises :class:`TaskError` (unless ``skip_failed``)."""
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        job = self._start("map", func, iterable, chunksize, progress,
                          out=[None] * len(iterable))  # type: ignore[arg-type]
        self._wait(job)
        return job.out  # type: ignore[return-value]

    def starmap(self, func: Any, iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = None,
                progress: Optional[Callable[[Progress], None]] = None) -> List[Any]:
        """``[func(*args) for args in iterable]``, as :meth:`map`."""
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        job = self._start("map", func, iterable, chunksize, progress, star=True,
                          out=[None] * len(iterable))  # type: ignore[arg-type]
        self._wait(job)
        return job.out  # type: ignore[return-value]

    def imap(self, func: Any, iterable: Iterable[Any], chunksize: int = 1,
             progress: Optional[Callable[[Progress], None]] = None) -> Iterator[Any]:
        """Results in input order as they become available; the iterable is read
        as workers free up."""
        job = self._start("map", func, iterable, chunksize, progress)
        return self._imap(job)

    def _imap(self, job: _Job) -> Iterator[Any]:
        i = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: i in job.results or job.finished)
                if i not in job.results:
                    if job.error:
                        raise job.error
                    if job.total is not None and i >= job.total:
                        return
                value = job.results.pop(i)
            yield value
            i += 1

    def imap_unordered(self, func: Any, iterable: Iterable[Any], chunksize: int = 1,
                       progress: Optional[Callable[[Progress], None]] = None) -> Iterator[Any]:
        """Results in the order they complete."""
        job = self._start("unordered", func, iterable, chunksize, progress)
        return self._unordered(job)

    def _unordered(self, job: _Job) -> Iterator[Any]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: job.queue or job.finished)
                if not job.queue:
                    if job.error:
                        raise job.error
                    return
                values = list(job.queue)
                job.queue.clear()
            yield from values

    def map_reduce(self, func: Any, iterable: Iterable[Any],
                   combine: Callable[[Any, Any], Any], *, worker_combine: Any = True,
                   initial: Any = None, chunksize: Optional[int] = None,
                   progress: Optional[Callable[[Progress], None]] = None) -> Any:
        """``combine``-reduce of ``func`` over ``iterable`` (a commutative,
        associative ``combine``; ``initial`` when there is no result).

        Each worker folds its own results (``herd.batch`` into an accumulator,
        then ``herd.take``): the master combines one partial per worker. For a
        pool of Python functions the workers use ``combine`` itself (a module
        level function, e.g. ``operator.add``); an executable's workers use the
        combine they declare, named by ``worker_combine`` (a str, computing
        what ``combine`` computes). ``worker_combine=False`` folds every
        result on the master instead.
        """
        wc: Optional[str] = None
        if isinstance(worker_combine, str):
            wc = worker_combine
        elif worker_combine and not self.executable:
            wc = _startapp.reference(combine, "combine")
            if self._pickle_asked:
                raise ValueError("worker-side combining needs JSON values; "
                                 "pass worker_combine=False with pickle=True")
        job = self._start("reduce", func, iterable, chunksize, progress, combine=combine,
                          worker_combine=wc)
        self._wait(job)
        return job.value if job.has_value else initial

    def find(self, func: Any, iterable: Iterable[Any],
             predicate: Optional[Callable[[Any], bool]] = None, chunksize: int = 1,
             progress: Optional[Callable[[Progress], None]] = None
             ) -> Optional[Tuple[int, Any]]:
        """The first result (in completion order) ``predicate`` accepts (default:
        not None), as ``(index, result)``, or None; the rest is cancelled."""
        job = self._start("find", func, iterable, chunksize, progress,
                          **({"predicate": predicate} if predicate else {}))
        return self._wait(job)  # type: ignore[no-any-return]

    def submit(self, func: Any, *args: Any) -> "concurrent.futures.Future[Any]":
        """``func(*args)`` on a worker, as ``Executor.submit`` (for an executable's
        pool: ``submit(name, params)``)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # before the engine may set its result
        items = [args[0] if self.executable and len(args) == 1 else args]
        self._start("call", func, items, 1, None, star=True, future=future, skip_failed=False)
        return future

    def apply(self, func: Any, args: Iterable[Any] = ()) -> Any:
        """``func(*args)`` on a worker, blocking (a pool of one: rpc_parallel's
        managed worker)."""
        return self.submit(func, *args).result()

    # ---- closing ----

    def close(self) -> None:
        """No more work: the workers stop once the jobs under way are done."""
        with self._cond:
            if self._state == "running":
                self._state = "closing"
        self._wake()

    def terminate(self) -> None:
        """Stop now: jobs under way end with an error, the workers are stopped."""
        with self._cond:
            if self._state in ("running", "closing"):
                self._state = "terminating"
        self._wake()
        self.join()

    def join(self) -> None:
        """Wait for the workers to be gone (after :meth:`close` or :meth:`terminate`)."""
        if self._state == "running":
            raise ValueError("Pool is still running")
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
            self.join()
        else:
            self.terminate()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until every worker is ready (the pool serves from the first one);
        False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._state == "gone" or all(s.state == "ready" for s in self._slots),
                timeout) and self._state != "gone"

    def pids(self) -> List[int]:
        """The pids of the workers ready now."""
        with self._cond:
            return [s.worker.pid for s in self._slots if s.state == "ready" and s.worker]

    # ---- the engine (its own thread) ----

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _on_event(self, event: Dict[str, Any]) -> None:
        wid = (event.get("worker") or {}).get("id")
        if wid and event.get("event") in DEATH_EVENTS:
            self._ends[wid] = event

    def _engine(self) -> None:
        try:
            for s in self._slots:
                self._spawn(s)
            while self._step():
                pass
        except BaseException as e:  # the pool cannot go on: every job learns why
            if isinstance(e, HerdError):
                self._error = e.with_traceback(None)
            else:
                self._error = HerdError("internal_error", f"pool engine: {type(e).__name__}: {e}")
                self._error.__cause__ = e
        finally:
            self._finish()

    def _step(self) -> bool:
        with self._cond:
            self._jobs += self._new_jobs
            self._new_jobs.clear()
            if self._state == "terminating":
                for job in list(self._jobs):
                    self._end(job, HerdError("cancelled", "the pool was terminated"))
                return False
            if self._state == "closing" and not self._jobs:
                return False
            now = time.monotonic()
            for s in self._slots:
                if s.state == "dying" and (s.worker.id in self._ends or  # type: ignore
                                           now - s.dying_since >= EVENT_WAIT):
                    self._buried(s)
                elif s.state == "backoff" and now >= s.respawn_at:
                    self._spawn(s)
                elif s.state == "ready":
                    self._check_timeout(s, now)
            for s in self._slots:
                if s.state == "ready":
                    self._dispatch(s)
                    self._flush(s)
            for job in list(self._jobs):
                self._check_done(job)  # an empty one has no reply to wait for
            self._report(now)
        wait = self._next_wake(time.monotonic())
        fds: List[Any] = [self._wake_r, self._master._conn]
        fds += [s.conn for s in self._slots if s.state == "ready"]
        ready, writable, _ = select.select(
            fds, [s.conn for s in self._slots if s.state == "ready" and s.out], [], wait)
        with self._cond:
            for s in self._slots:
                if s.state == "ready" and s.conn in writable:
                    self._flush(s)
            for fd in ready:
                if fd is self._wake_r:
                    while True:
                        try:
                            if not os.read(self._wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
                else:
                    fd.pump(0)
            self._master.events.clear()  # kept in _ends; the list would only grow
            if self._master._conn.closed:
                raise HerdError("crash_loop", f"lost herdd: {self._master._conn.closed}")
            self._collect_spawns()
            for s in self._slots:
                if s.state == "ready":
                    self._collect(s)
            if self._waking:
                # Only for what a waiter waits for: a thread woken for nothing
                # takes the GIL from the engine.
                self._waking = False
                self._cond.notify_all()
        return True

    def _next_wake(self, now: float) -> Optional[float]:
        times: List[float] = []
        for s in self._slots:
            if s.state == "dying":
                times.append(s.dying_since + EVENT_WAIT)
            elif s.state == "backoff":
                times.append(s.respawn_at)
            for f in s.flights.values():
                if f.deadline is not None:
                    times.append(f.deadline)
        if any(j.progress for j in self._jobs):
            times.append(now + PROGRESS_EVERY)
        return max(0.0, min(times) - now) if times else None

    # ---- spawning ----

    def _spawn(self, s: _Slot) -> None:
        if self._consecutive > self.max_restarts:
            raise HerdError("crash_loop", f"pool {self.name}: {self._consecutive} worker deaths "
                            f"in a row with no task done; the last: {self._last_death}")
        s.gen += 1
        self.spawns += 1
        s.state = "spawning"
        opts = dict(self._spawn_opts, pool=self.name)  # a copy: spawn_params pops from it
        params = spawn_params(opts.pop("path"), opts.pop("args"), opts.pop("init"),
                              f"{self.name}.{s.k}", opts.pop("inherit_env"), True,
                              self._master.settings, opts)
        s.spawn_rid = self._master._conn.request("spawn", params)

    def _collect_spawns(self) -> None:
        conn = self._master._conn
        for s in self._slots:
            if s.state != "spawning" or s.spawn_rid not in conn._replies:
                continue
            try:
                s.worker = Worker(self._master, conn.wait(s.spawn_rid, 0))
                # herdd watches the worker (fd 3): no heartbeats on this connection.
                s.conn = s.worker.connect(name=self.name, settings={
                    "heartbeat_interval_ms": 0, "heartbeat_timeout_ms": 0})._conn
                s.conn._sock.setblocking(False)
                s.out = bytearray()
            except HerdError as e:
                self._spawn_failed(s, e)
                continue
            s.state = "ready"
            self._ever_ready = self._waking = True

    def _spawn_failed(self, s: _Slot, e: HerdError) -> None:
        self._last_death = f"spawn failed: {e}"
        s.state = "idle"
        if not self._ever_ready and e.name == "init_failed":
            # The same script fails the same way in every worker: say so now.
            raise HerdError("init_failed", f"pool {self.name}: a worker's init failed: "
                            f"{e.message}", data=e.data)
        self._died(s)

    def _died(self, s: _Slot) -> None:
        """Count a death and schedule the slot's respawn after a backoff."""
        self.deaths += 1
        self._consecutive += 1
        s.state = "backoff"
        delay = 0.0 if self._consecutive <= 1 else min(2.0, 0.025 * 2 ** self._consecutive)
        s.respawn_at = time.monotonic() + delay
        if s.conn is not None:
            s.conn.close()
            s.conn = None
        s.out = bytearray()

    # ---- dispatch ----

    def _dispatch(self, s: _Slot) -> None:
        if any(f.alone for f in s.flights.values()):
            return  # a suspect runs alone: what dies with it is its own doing
        for job in self._jobs:
            if job.finished:
                continue
            while s.busy() < self.window:
                if job.suspects:
                    if s.flights:
                        break  # a suspect runs alone
                    i, p = job.suspects.popleft()
                    self._send(s, job, [i], [p], alone=True)
                    return
                if not (job.redo or not job.exhausted):
                    break
                indices, params = job.take(job.chunksize)
                if job.finished:
                    return
                if params:
                    self._send(s, job, indices, params)
            self._maybe_take(s, job)
            if s.busy() >= self.window:
                return

    # Requests to workers are queued and written when the socket takes them: a
    # blocking write could wait for a worker that waits for us to read its reply.

    def _queue(self, s: _Slot, method: str, params: Any, request: bool = True) -> int:
        """Queues a request (or a notification); returns its id. Raises
        limit_exceeded for a message over the worker's max_message_size."""
        try:
            if request:
                rid, data = s.conn.p.request(method, params)
            else:
                rid, data = 0, s.conn.p.notification(method, params)
        except HerdError as e:
            if e.name != "limit_exceeded":
                raise
            raise HerdError("limit_exceeded", "a task's params are over the worker's "
                            "max_message_size", data=e.data) from None
        s.out += data
        return rid

    def _flush(self, s: _Slot) -> None:
        """Writes what the socket takes now."""
        while s.out and not s.conn.closed:
            try:
                n = s.conn._sock.send(s.out)
            except BlockingIOError:
                return
            except OSError as e:
                s.conn._fail(HerdError("connection_closed", f"send: {e.strerror}"))
                return
            del s.out[:n]

    def _acc(self, s: _Slot, job: _Job) -> str:
        """The accumulator of job on s's worker: never shared, never reused by
        its replacement (PROTOCOL.md 6.6)."""
        return f"{os.getpid()}.{self.name}.{s.k}.{s.gen}.{job.number}"

    def _send(self, s: _Slot, job: _Job, indices: Any, params: List[Any],
              alone: bool = False) -> None:
        msg: Dict[str, Any] = {"function": job.function, "args": params}
        acc = None
        if job.kind == "reduce" and job.worker_combine:
            acc = self._acc(s, job)
            msg.update(acc=acc, combine=job.worker_combine)
        try:
            if not job.chunked:
                rid = self._queue(s, "herd.batch", msg)
            elif self.pickle:
                rid = self._queue(s, job.function, _startapp.encode((params, job.star), True))
            else:
                rid = self._queue(s, job.function, [params, job.star])
        except HerdError as e:
            if len(params) > 1:  # a batch too big for one message goes as two halves
                half = len(params) // 2
                ind = list(indices)
                self._send(s, job, ind[:half], params[:half], alone)
                return self._send(s, job, ind[half:], params[half:], alone)
            job.outstanding += 1
            i = list(indices)[0]
            return job.task_failed(i, self._item(job, params[0]), TaskError(
                e.name, e.message, i, self._item(job, params[0]), e.data))
        job.outstanding += len(params)
        f = s.flights[rid] = _Flight(job, indices, params, acc)
        f.alone = alone
        if len(s.flights) == 1 and self.task_timeout:
            f.deadline = time.monotonic() + self.task_timeout * len(params)

    def _maybe_take(self, s: _Slot, job: _Job) -> None:
        """Ask for the worker's partial once every fold of job there is acknowledged
        and nothing of job is left to send."""
        folded = s.folded.get(job)
        if not folded or job.pending() or any(f.job is job for f in s.flights.values()):
            return
        if any(j is job for j, _ in s.takes.values()):
            return
        rid = self._queue(s, "herd.take", {"acc": self._acc(s, job)})
        s.takes[rid] = (job, s.folded.pop(job))

    # ---- replies ----

    def _collect(self, s: _Slot) -> None:
        replies = s.conn._replies
        for rid in [r for r in s.flights if r in replies]:
            f = s.flights.pop(rid)
            try:
                self._answered(s, f, replies.pop(rid))
            except Exception as e:  # the caller's combine or predicate raised: its job ends
                self._end(f.job, e)
            if s.flights and self.task_timeout:
                head = next(iter(s.flights.values()))
                head.deadline = time.monotonic() + self.task_timeout * len(head.params)
        for rid in [r for r in s.takes if r in replies]:
            job, tasks = s.takes.pop(rid)
            try:
                self._taken(s, job, tasks, replies.pop(rid))
            except Exception as e:
                self._end(job, e)
        if s.conn.closed:
            s.state = "dying"
            s.dying_since = time.monotonic()

    def _answered(self, s: _Slot, f: _Flight, reply: Dict[str, Any]) -> None:
        job = f.job
        if job.finished:
            return
        if "error" in reply:  # the whole batch failed (method_not_found, combine_failed...)
            err = HerdError.from_reply(reply["error"])
            job.outstanding -= len(f.params)
            return self._end(job, err)
        result = reply.get("result") or {}
        if job.chunked:
            if self.pickle:
                result = _startapp.decode(result)
            result = {"results": result[0], "errors": result[1]}
        failed = {e["index"]: e["error"] for e in result.get("errors", ())
                  if isinstance(e, dict)}
        self._consecutive = 0
        # A chunk's indices as a list only when some failed: a range costs nothing.
        indices = list(f.indices) if failed else f.indices
        retry = []
        for pos, error in failed.items():
            err = HerdError.from_reply(error)
            i = indices[pos]
            if self.retry_failed and job.deaths.get(i, 0) < self.retries:
                job.deaths[i] = job.deaths.get(i, 0) + 1
                retry.append(pos)
                continue
            job.task_failed(i, self._item(job, f.params[pos]),
                            TaskError(err.name, err.message, i, self._item(job, f.params[pos]),
                                      err.data, err.code))
            if job.finished:
                return
        for pos in retry:
            job.outstanding -= 1
            job.retried += 1
            job.redo.append((indices[pos], f.params[pos]))
        if f.acc is not None:
            ok = [(indices[k], f.params[k]) for k in range(len(indices)) if k not in failed]
            s.folded.setdefault(job, []).extend(ok)
            return
        values = result.get("results", [])
        if failed:
            keep = [k for k in range(len(indices)) if k not in failed]
            job.succeeded([indices[k] for k in keep], [values[k] for k in keep])
        else:
            job.succeeded(f.indices, values)
        self._check_done(job)

    def _taken(self, s: _Slot, job: _Job, tasks: List[Tuple[int, Any]],
               reply: Dict[str, Any]) -> None:
        if job.finished:
            return
        if "error" in reply:
            job.outstanding -= len(tasks)
            return self._end(job, HerdError.from_reply(reply["error"]))
        result = reply["result"]
        if result.get("n") != len(tasks):
            return self._end(job, HerdError("internal_error", f"herd.take counted "
                                            f"{result.get('n')} folds, not {len(tasks)}"))
        job.done += len(tasks)
        job.outstanding -= len(tasks)
        if tasks:
            job.fold(result.get("value"))
        self._check_done(job)

    def _check_done(self, job: _Job) -> None:
        if job.finished or not job.complete():
            return
        if job.kind == "reduce" and job.worker_combine and \
                any(job in s.folded or any(j is job for j, _ in s.takes.values())
                    for s in self._slots):
            return
        self._end(job, None)

    def _item(self, job: _Job, params: Any) -> Any:
        """The caller's item back from the params it became."""
        if self.executable:
            return params
        if job.chunked:
            return tuple(params) if job.star else params
        return params[0] if len(params) == 1 else tuple(params)

    # ---- deaths and timeouts ----

    def _check_timeout(self, s: _Slot, now: float) -> None:
        for rid, f in s.flights.items():
            if f.deadline is not None and now >= f.deadline:
                s.timed_out = rid
                try:
                    self._master.kill(s.worker.id, "KILL")  # type: ignore[union-attr]
                except HerdError:
                    pass
                s.state = "dying"
                s.dying_since = now
                return

    def _buried(self, s: _Slot) -> None:
        """A worker is gone and its end event came (or not in time): its tasks run again."""
        wid = s.worker.id  # type: ignore[union-attr]
        event = self._ends.pop(wid, {})
        w = event.get("worker") or {}
        how = w.get("signal") or (f"exit code {w.get('exit_code')}"
                                  if w.get("exit_code") is not None else "connection lost")
        self._last_death = f"worker {wid} (pid {s.worker.pid}) {event.get('event', 'lost')}: " \
            f"{how}"  # type: ignore[union-attr]
        data = {"worker": wid, "event": event.get("event"), "signal": w.get("signal"),
                "exit_code": w.get("exit_code"), "stderr_tail": event.get("stderr_tail", []),
                "message": event.get("message")}
        for rid, f in s.flights.items():
            timed_out = rid == s.timed_out
            for i, p in zip(f.indices, f.params):
                self._lost(f.job, i, p, timed_out, data)
        for job, tasks in list(s.folded.items()) + list(s.takes.values()):
            # Acknowledged folds the take never covered: lost with the worker.
            job.redo.extend(tasks)
            job.retried += len(tasks)
            job.outstanding -= len(tasks)
        s.flights.clear()
        s.folded.clear()
        s.takes.clear()
        s.timed_out = None
        self._died(s)

    def _lost(self, job: _Job, i: int, p: Any, timed_out: bool, data: Dict[str, Any]) -> None:
        if job.finished:
            return
        job.deaths[i] = job.deaths.get(i, 0) + 1
        if job.deaths[i] <= self.retries:
            job.outstanding -= 1
            job.retried += 1
            job.suspects.append((i, p))
            return
        item = self._item(job, p)
        if timed_out:
            err = TaskError("timeout", f"ran longer than {self.task_timeout} s "
                            f"({job.deaths[i]} times); its worker was killed", i, item, data)
        else:
            tail = "".join(f"\n  {line}" for line in data["stderr_tail"][-5:])
            err = TaskError("task_crashed", f"killed its worker {job.deaths[i]} times; the last "
                            f"death: {self._last_death}" + (f"; stderr:{tail}" if tail else ""),
                            i, item, data)
        job.task_failed(i, item, err)

    # ---- ends ----

    def _end(self, job: _Job, error: Optional[BaseException]) -> None:
        """The job is over (error None: it succeeded); cancel what it has in flight."""
        if job.finished:
            return
        job.finished = True
        job.error = error
        if job in self._jobs:
            self._jobs.remove(job)
        for s in self._slots:
            for rid, f in s.flights.items():
                if f.job is job and s.state == "ready" and rid > 0:
                    self._queue(s, "herd.cancel", {"id": rid}, request=False)
            s.folded.pop(job, None)
        self._report(time.monotonic(), final=True, only=job)
        if job.future is not None:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(job.value)
        self._cond.notify_all()

    def _report(self, now: float, final: bool = False, only: Optional[_Job] = None) -> None:
        for job in [only] if only else self._jobs:
            if job is None or job.progress is None:
                continue
            if final or now - job.last_progress >= PROGRESS_EVERY:
                job.last_progress = now
                rate = job.done / max(now - job.started, 1e-9)
                try:
                    job.progress(Progress(job.done, job.failed, job.retried, job.total, rate))
                except Exception as e:  # the caller's callback raised: its job ends with it
                    job.progress = None
                    self._end(job, e)

    def _finish(self) -> None:
        """The engine's last act: end every job, stop the workers, close the session."""
        with self._cond:
            error = self._error or HerdError("cancelled", "the pool was closed")
            for job in list(self._jobs) + self._new_jobs:
                self._end(job, error)
            self._new_jobs.clear()
            self._state = "gone"
            self._cond.notify_all()
        try:
            self._stop_workers()
        finally:
            self._master.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            with self._cond:
                self._cond.notify_all()

    def _stop_workers(self) -> None:
        """Each worker stops through herdd, recorded as a normal shutdown."""
        conn = self._master._conn
        ids = []
        for s in self._slots:
            if s.conn is not None:
                s.conn.close()
            try:
                if s.state == "spawning":
                    ids.append(conn.wait(s.spawn_rid, 10.0)["id"])
                elif s.worker is not None and s.state in ("ready", "dying"):
                    ids.append(s.worker.id)
            except HerdError:
                pass
        rids = [conn.request("shutdown", {"id": i}) for i in ids if not conn.closed]
        for rid in rids:
            try:
                conn.wait(rid, 10.0)
            except HerdError:
                pass
