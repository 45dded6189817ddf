"""Network faults on demand: a TCP proxy that can be cut, restored or made to hang, and a black hole.

Why a proxy and not a mock: the gateway's failure handling lives in real drivers (psycopg, redis-py,
httpx), and what they do on a reset, a refused connection or a silent peer is exactly what issue #15
is about. Putting this proxy between the gateway and a real Postgres/Redis/upstream reproduces those
faults with the real drivers. It lives in the package (not under tests/) because both the reliability
tests and ``benchmarks/faults.py`` drive it; it is dependency-free (sockets and threads only) and is
never imported by the gateway's request path.

Modes of :class:`TcpProxy`:

* ``forward`` (default, and after :meth:`TcpProxy.restore`): bytes flow both ways.
* ``cut``: every open connection is reset (RST, so the peer sees it at once) and every new one is
  accepted and reset immediately - what a client sees when a database restarts or a link drops.
* ``hang``: connections are accepted and kept open, but no byte is forwarded either way (data read
  meanwhile is held and delivered after :meth:`TcpProxy.restore`) - a peer that is up but never answers.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from types import TracebackType

_CHUNK = 65536
_POLL_S = 0.2  # how often blocked threads re-check the mode and the stop flag


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (linger 0) so the peer fails now instead of waiting on FIN/timeouts."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on this socket
    except OSError:
        pass
    sock.close()


class _Link:
    """One client connection and its upstream socket; closed once, by whoever notices first."""

    def __init__(self, client: socket.socket, generation: int) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.generation = generation
        self.closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if sock is not None:
                _reset(sock)


class TcpProxy:
    """A TCP proxy on ``listen_host:<free port>`` in front of ``upstream_host:upstream_port``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Point the client at ``.port``.
    """

    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen_host = listen_host
        self.port = 0
        self.accepted = 0  # connections accepted so far, in any mode (tests assert traffic went through)
        self._mode = "forward"
        self._generation = 0  # bumped by cut(): links of an older generation never forward again
        self._cond = threading.Condition()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.listen_host, 0))
        listener.listen(512)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._mode = "cut"
            self._cond.notify_all()
        self._close_links()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- faults ----------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    def cut(self) -> None:
        """Reset every open connection and reset every new one until :meth:`restore`."""
        with self._cond:
            self._mode = "cut"
            self._generation += 1
            self._cond.notify_all()
        self._close_links()

    def hang(self) -> None:
        """Keep (and accept) connections but forward nothing until :meth:`restore`."""
        with self._cond:
            self._mode = "hang"
            self._cond.notify_all()

    def restore(self) -> None:
        """Forward again; connections kept open during a hang resume, cut ones stay closed."""
        with self._cond:
            self._mode = "forward"
            self._cond.notify_all()

    # ---- internals -------------------------------------------------------------------------------
    def _close_links(self) -> None:
        with self._cond:
            links = list(self._links)
        for link in links:
            link.close()

    def _wait_for_forwarding(self, link: _Link) -> bool:
        """Block while hanging; True when the link may forward, False when it must die."""
        with self._cond:
            while True:
                if link.closed or self._stopping.is_set() or link.generation != self._generation:
                    return False
                if self._mode == "forward":
                    return True
                if self._mode == "cut":
                    return False
                self._cond.wait(_POLL_S)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not sel.select(_POLL_S):
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue
                self.accepted += 1
                with self._cond:
                    if self._mode == "cut":
                        _reset(client)
                        continue
                    link = _Link(client, self._generation)
                    self._links.add(link)
                thread = threading.Thread(target=self._serve, args=(link,), daemon=True)
                thread.start()

    def _serve(self, link: _Link) -> None:
        """Connect upstream once forwarding is allowed, then pump both directions until either closes."""
        try:
            if not self._wait_for_forwarding(link):
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            link.upstream = upstream
            if link.closed:  # cut() ran while we connected
                _reset(upstream)
                return
            back = threading.Thread(target=self._pump, args=(link, upstream, link.client), daemon=True)
            back.start()
            self._pump(link, link.client, upstream)
            back.join()
        finally:
            link.close()
            with self._cond:
                self._links.discard(link)

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(_CHUNK)
            except OSError:
                break
            if not data:
                break
            if not self._wait_for_forwarding(link):
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        link.close()


class BlackHoleServer:
    """Accepts TCP connections and reads what they send, but never answers and never closes them.

    The shape of issue #15's "Redis that accepts connections but never answers": a client without a
    read timeout waits forever.
    """

    def __init__(self, listen_host: str = "127.0.0.1") -> None:
        self.listen_host = listen_host
        self.port = 0
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> BlackHoleServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.listen_host, 0))
        listener.listen(512)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._loop, name=f"black-hole-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for sock in self._clients:
            _reset(sock)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> BlackHoleServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _loop(self) -> None:
        """One selector for the listener and all clients: read and discard, so senders never block."""
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select(_POLL_S):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        try:
                            client, _ = sock.accept()
                        except OSError:
                            continue
                        self.accepted += 1
                        client.setblocking(False)
                        self._clients.append(client)
                        sel.register(client, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(_CHUNK)
                    except OSError:
                        data = b""
                    if not data:  # the client gave up; forget it
                        sel.unregister(sock)
                        self._clients.remove(sock)
                        sock.close()
