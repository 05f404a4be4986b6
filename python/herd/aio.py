"""herd for asyncio: the master API of :mod:`herd` with coroutines, over the
same protocol core (herd._proto.Protocol) and the same session logic.

    async with herd.aio.connect() as m:
        w = await m.spawn("/usr/libexec/herd/herd-testworker")
        async with await w.connect() as c:
            print(await c.call("sum", {"n": 10}))
            async for item in c.stream("count", {"n": 3}):
                print(item)

Cancelling the task that awaits a call, a stream item or a sink's finish
sends ``herd.cancel`` for that request (6.3). Heartbeats run in the loop, so
the caller stays alive as long as the loop turns.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, Generator, List, Optional

from ._master import (Worker, _Calls, _Session, _StreamBase, autostart,
                      autostart_wanted, is_failure, socket_path)
from ._proto import (Driver, HerdError, Message, Protocol, connect_error, peer_pid,
                     resolve_settings, result_of)

__all__ = ["AsyncConnection", "AsyncMaster", "AsyncSink", "AsyncStream",
           "AsyncWorkerConnection", "EventFeed", "connect"]

_END = None  # ends a stream's item queue


class AsyncConnection(Driver):
    """One hello'd connection driven by asyncio: a reader task routes what
    arrives (replies to futures, items to queues), a heartbeat task beats."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 settings: Dict[str, int], cancels: bool) -> None:
        super().__init__(settings)
        self._reader = reader
        self._writer = writer
        self._cancels = cancels  # a worker takes herd.cancel; herdd has no use for it
        self._waiters: Dict[Any, "asyncio.Future[Message]"] = {}
        self._items: Dict[Any, "asyncio.Queue[Optional[Message]]"] = {}
        self._tasks: List["asyncio.Task[None]"] = []
        self.gone = asyncio.Event()  # set once the connection closed

    @classmethod
    async def open(cls, path: str, role: str, name: Optional[str] = None,
                   settings: Optional[Dict[str, int]] = None, init: Any = None,
                   extra: Optional[Dict[str, Any]] = None) -> "AsyncConnection":
        """Connect to ``path`` and say hello with ``role`` (3.1)."""
        s = resolve_settings(settings)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError as e:
            raise connect_error(path, e) from None
        c = cls(reader, writer, s, cancels=role == "client")
        c._tasks.append(asyncio.create_task(c._read_loop()))
        try:
            c.p.hello_done(await c.call("hello", Protocol.hello_params(role, s, name, init, extra),
                                        timeout=s["handshake_timeout_ms"] / 1000), role)
        except BaseException:
            await c.close()
            raise
        if c.p.heartbeat_interval > 0:
            c._tasks.append(asyncio.create_task(c._heartbeat_loop()))
        return c

    # ---- sending ----

    def _write(self, data: bytes) -> None:
        if self._writer.is_closing():
            self._closed_now(HerdError("connection_closed", "the connection is closing"))
            raise self.p.closed  # type: ignore[misc]
        self._writer.write(data)

    def request(self, method: str, params: Any = None) -> int:
        """Send a request; returns its ID for :meth:`wait`."""
        rid, data = self.p.request(method, params)
        self._waiters[rid] = asyncio.get_running_loop().create_future()
        self._write(data)
        return rid

    async def drain(self) -> None:
        """Wait until the output queue is below asyncio's high-water mark."""
        try:
            await self._writer.drain()
        except OSError as e:
            self._closed_now(HerdError("connection_closed", f"send: {e.strerror}"))
            raise self.p.closed from None  # type: ignore[misc]

    async def call(self, method: str, params: Any = None,
                   timeout: Optional[float] = None) -> Any:
        """A request and its reply's result; an error reply raises :class:`HerdError`."""
        rid = self.request(method, params)
        await self.drain()
        return await self.wait(rid, timeout)

    async def wait(self, rid: Any, timeout: Optional[float] = None) -> Any:
        """The result of request ``rid``. A timeout or the task's cancel gives it
        up (``herd.cancel`` sent to a worker)."""
        fut = self._waiters[rid]
        try:
            reply = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self.abandon(rid)
            raise HerdError("timeout", f"no reply within {timeout} s",
                            data={"what": "call", "ms": int((timeout or 0) * 1000)}) from None
        except asyncio.CancelledError:
            self.abandon(rid)
            raise
        self._waiters.pop(rid, None)
        self._items.pop(rid, None)
        return result_of(reply)

    def abandon(self, rid: Any) -> None:
        """Give up request ``rid``: its reply and items are dropped, the worker told."""
        self.p.forget(rid)
        self._waiters.pop(rid, None)
        self._items.pop(rid, None)
        if self._cancels and not self.closed:
            try:
                self.notify("herd.cancel", {"id": rid})
            except HerdError:
                pass

    def replied(self, rid: Any) -> bool:
        """Whether request ``rid``'s reply has arrived."""
        fut = self._waiters.get(rid)
        return fut is not None and fut.done()

    # ---- receiving ----

    def got_reply(self, msg: Message) -> None:
        """Hands a reply to its waiter and ends its stream, if any."""
        fut = self._waiters.get(msg["id"])
        if fut is not None and not fut.done():
            fut.set_result(msg)
        q = self._items.get(msg["id"])
        if q is not None:
            q.put_nowait(_END)

    def got_item(self, params: Message) -> None:
        """Queues a ``herd.item`` for the stream it belongs to."""
        q = self._items.get(params.get("id"))
        if q is not None:
            q.put_nowait(params)

    async def _read_loop(self) -> None:
        try:
            while not self.closed:
                dead = self.p.dead_at()
                left = None if dead is None else max(0.0, dead - time.monotonic())
                try:
                    data = await asyncio.wait_for(self._reader.read(1 << 16), left)
                except asyncio.TimeoutError:
                    self.p.check_silence(time.monotonic())
                    continue
                except OSError as e:
                    self.p.fail(HerdError("connection_closed", f"recv: {e.strerror}"))
                    break
                for msg in self.p.receive(data):
                    self.p.route(msg, self)
                if self.p.broken:
                    last = self.p.farewell()
                    if last:
                        self._writer.write(last)
                    self.p.fail(self.p.broken)
        finally:
            self._closed_now(self.p.closed or HerdError("connection_closed", "closed"))

    async def _heartbeat_loop(self) -> None:
        due = self.beat()
        while due is not None:
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # a timer: the beat is due then
            due = self.beat()

    def _closed_now(self, err: HerdError) -> None:
        """Fails every waiter and ends every stream with the close's reason."""
        self.p.fail(err)
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(self.p.closed)  # type: ignore[arg-type]
                fut.exception()  # a waiter that left must not be reported as lost
        for q in self._items.values():
            q.put_nowait(_END)
        self._writer.close()
        self.gone.set()

    # ---- streams ----

    def open_stream(self, method: str, params: Any = None) -> int:
        """Sends a stream or sink request; its items then come from :meth:`next_item`."""
        rid = self.request(method, params)
        self._items[rid] = asyncio.Queue()
        return rid

    async def next_item(self, rid: Any) -> Optional[Message]:
        """The next ``herd.item`` params of stream ``rid``, or None once it ended."""
        q = self._items.get(rid)
        if q is None:
            return None
        try:
            return await q.get()
        except asyncio.CancelledError:
            self.abandon(rid)
            raise

    def peer_pid(self) -> int:
        """The pid of the process at the other end of the socket (SO_PEERCRED)."""
        return peer_pid(self._writer.get_extra_info("socket"))

    # ---- closing ----

    async def close(self) -> None:
        """Close now: pending calls and streams fail ``connection_closed``."""
        self._closed_now(HerdError("connection_closed", "closed by this side"))
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


class AsyncMaster(_Session):
    """A master session with herdd under asyncio. Use :func:`connect`. The
    control methods (spawn, list, inspect, kill, shutdown, logs, stats,
    subscribe, request) are :class:`herd.Master`'s, awaited."""

    def __init__(self, conn: AsyncConnection, settings: Dict[str, int]) -> None:
        super().__init__()
        self._conn = conn
        self.settings = settings
        self._queues: List["asyncio.Queue[Dict[str, Any]]"] = []
        conn.on_notification("event", self._on_event)

    def _run(self, method: str, params: Any = None,
             post: Optional[Callable[[Any], Any]] = None) -> Any:
        async def run() -> Any:
            result = await self._conn.call(method, params)
            return post(result) if post else result
        return run()

    async def _connect_worker(self, worker: Worker, kw: Dict[str, Any]) -> "AsyncWorkerConnection":
        conn = await AsyncConnection.open(worker.socket, "client", **kw)
        try:
            worker._check_peer(conn.peer_pid())
        except HerdError:
            await conn.close()
            raise
        return AsyncWorkerConnection(conn)

    def _on_event(self, method: str, params: Any) -> None:
        super()._on_event(method, params)
        if isinstance(params, dict):
            for q in self._queues:
                q.put_nowait(params)

    def watch_events(self, predicate: Callable[[Dict[str, Any]], bool] = lambda ev: True
                     ) -> "EventFeed":
        """The events that arrive from this call on for which ``predicate``
        holds, as an async iterator that ends when the session closes."""
        return EventFeed(self, predicate)

    def failures(self) -> "EventFeed":
        """The failure events (those :meth:`on_failure` callbacks get) from now on."""
        return self.watch_events(is_failure)

    async def wait_event(self, predicate: Callable[[Dict[str, Any]], bool],
                         timeout: float = 10.0) -> Dict[str, Any]:
        """The first event (already received or arriving within ``timeout``) for
        which ``predicate`` holds; it is taken off :attr:`events`."""
        feed = EventFeed(self, predicate)  # listening before looking: none slips by
        try:
            ev = self._take_event(predicate)
            if ev is None:
                ev = await asyncio.wait_for(feed.__anext__(), timeout)
                self._take_event(lambda e: e is ev)
            return ev
        except asyncio.TimeoutError:
            raise HerdError("timeout", f"no such event within {timeout} s",
                            data={"what": "event"}) from None
        except StopAsyncIteration:
            raise self._conn.closed or HerdError("connection_closed", "closed") from None
        finally:
            await feed.aclose()

    async def close(self) -> None:
        """End the session on purpose: its workers stop as ``master_closed`` (4.1)."""
        if not self._conn.closed:
            try:
                self._conn.notify("goodbye")
                await self._conn.drain()
            except HerdError:
                pass
        await self._conn.close()

    async def __aenter__(self) -> "AsyncMaster":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class EventFeed:
    """Events of an :class:`AsyncMaster` from its creation on, as an async
    iterator; ``aclose()`` (or the session's end) stops it."""

    def __init__(self, master: AsyncMaster,
                 predicate: Callable[[Dict[str, Any]], bool]) -> None:
        self._master = master
        self._predicate = predicate
        self._queue: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        master._queues.append(self._queue)

    def __aiter__(self) -> "EventFeed":
        return self

    async def __anext__(self) -> Dict[str, Any]:
        gone = asyncio.ensure_future(self._master._conn.gone.wait())
        try:
            while True:
                get = asyncio.ensure_future(self._queue.get())
                await asyncio.wait([get, gone], return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    await self.aclose()
                    raise StopAsyncIteration
                ev = get.result()
                if self._predicate(ev):
                    return ev
        finally:
            gone.cancel()

    async def aclose(self) -> None:
        """Stop collecting events for this feed."""
        if self._queue in self._master._queues:
            self._master._queues.remove(self._queue)


class AsyncWorkerConnection(_Calls):
    """A client connection to a worker under asyncio: ``await c.call(...)``,
    ``c.notify(...)``, ``async for item in c.stream(...)``, ``c.sink(...)``."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._stream_class = AsyncStream
        self._sink_class = AsyncSink

    async def close(self) -> None:
        """Close the connection; what still waits on it fails ``connection_closed``."""
        await self._conn.close()

    async def __aenter__(self) -> "AsyncWorkerConnection":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncStream(_StreamBase):
    """A server stream: ``async for`` yields its items; :attr:`result` is the
    final reply. Cancelling the iterating task cancels the stream."""

    def __init__(self, conn: AsyncConnection, fn: str, arg: Any) -> None:
        super().__init__(conn, conn.open_stream(fn, arg))

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        more, item = self._item(await self._conn.next_item(self._id))
        if more:
            return item
        await self._finish()
        raise StopAsyncIteration

    async def _finish(self, timeout: Optional[float] = None) -> None:
        try:
            result = await self._conn.wait(self._id, timeout)
        except HerdError as e:
            self._ended(e)
        else:
            self._ended(None, result)

    async def cancel(self) -> None:
        """Ask the worker to end the stream; items still on the way are dropped."""
        if self._cancel_needed():
            await self._finish()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.cancel()


class AsyncSink(AsyncStream):
    """A client-to-worker stream (kind ``sink``): ``await send(item)``, then
    ``await finish()`` for the result; leaving ``async with`` unfinished cancels."""

    def __init__(self, conn: AsyncConnection, fn: str, arg: Any) -> None:
        _StreamBase.__init__(self, conn, conn.request(fn, arg))

    async def send(self, item: Any) -> None:
        """Send one item (waiting while the output queue is full). Raises
        BrokenPipeError once the sink ended, as :meth:`herd.Sink.send`."""
        self._check_open()
        self._conn.notify("herd.item", {"id": self._id, "item": item})
        await self._conn.drain()

    async def finish(self, timeout: Optional[float] = None) -> Any:
        """End the stream and return the function's result (its error raises)."""
        if not self._done:
            if not self._cancelled and not self._conn.replied(self._id):
                self._conn.notify("herd.end", {"id": self._id})
            await self._finish(timeout)
        return self.result


class _Connecting:
    """What :func:`connect` returns: await it for the master, or use it with
    ``async with`` to close the master at the end."""

    def __init__(self, socket: Optional[str], name: Optional[str],
                 settings: Optional[Dict[str, int]]) -> None:
        self._args = (socket, name, settings)
        self._master: Optional[AsyncMaster] = None

    def __await__(self) -> Generator[Any, None, AsyncMaster]:
        return _connect(*self._args).__await__()

    async def __aenter__(self) -> AsyncMaster:
        self._master = await _connect(*self._args)
        return self._master

    async def __aexit__(self, *exc: Any) -> None:
        assert self._master is not None
        await self._master.close()


def connect(socket: Optional[str] = None, name: Optional[str] = None,
            settings: Optional[Dict[str, int]] = None) -> _Connecting:
    """A master session with herdd, as :func:`herd.connect` finds (and if need
    be autostarts) it: ``m = await herd.aio.connect()`` or ``async with
    herd.aio.connect() as m``."""
    return _Connecting(socket, name, settings)


async def _connect(socket: Optional[str], name: Optional[str],
                   settings: Optional[Dict[str, int]]) -> AsyncMaster:
    path = socket_path(socket)
    resolved = resolve_settings(settings)
    for attempt in (1, 2):
        try:
            return AsyncMaster(await AsyncConnection.open(path, "master", name=name,
                                                          settings=settings), resolved)
        except HerdError as e:
            if attempt == 2 or not autostart_wanted(e):
                raise
        # Starting herdd blocks (fork, then its READY=1): off the loop's thread.
        await asyncio.get_running_loop().run_in_executor(None, autostart, path, socket,
                                                         resolved)
    raise AssertionError("unreachable")

