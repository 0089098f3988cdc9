"""A tiny TCP proxy for tests: forwards a local port to a target port, can be
stopped and started again (a database or server "going down"), and can cut
one connection once, mid-response (a dropped network connection).

It speaks no protocol of its own: every byte goes through unchanged.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from tests.multiprocess.procs import free_port


class TcpProxy:
    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        # cut(bytes the client sent, bytes the server sent) on one connection
        # -> True: close both sides now (once).
        self.cut: Callable[[bytes, bytes], bool] | None = None
        # True: the bytes that made `cut` true are dropped, not forwarded (a
        # response lost after the server sent it).
        self.drop_on_cut = False
        self.cuts = 0
        self.requests: list[bytes] = []  # each HTTP request head clients sent (keep-alive included)
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> "TcpProxy":
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (the target "is down")."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            _close(conn)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns |= {client, upstream}
            first = bytearray()
            threading.Thread(target=self._pipe, args=(client, upstream, first, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, bytearray(), first), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, seen: bytearray, request: bytearray | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                seen += data
                if request is None and data.split(b" ", 1)[0] in (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD"):
                    self.requests.append(data.split(b"\r\n\r\n", 1)[0])
                cutting = (request is not None and self.cut is not None and self.cuts == 0
                           and self.cut(bytes(request), bytes(seen)))
                if not (cutting and self.drop_on_cut):
                    dst.sendall(data)
                if cutting:
                    self.cuts += 1
                    break
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
