"""A connection flood, as a process of its own: ``python -m tests.faults.flood HOST PORT N``
keeps N idle TCP connections open to HOST:PORT until SIGTERM, opening a new one whenever
the server closes or resets one, never sending a byte.

It prints ``open N`` once N have connected, and after SIGTERM one JSON line:
``{"connected": ..., "closed_by_server": ..., "failed": ...}``.
"""

from __future__ import annotations

import json
import selectors
import signal
import socket
import sys


def flood(host: str, port: int, count: int) -> dict[str, int]:
    selector = selectors.DefaultSelector()
    stats = {"connected": 0, "closed_by_server": 0, "failed": 0}
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, port))  # EINPROGRESS: finished when writable
        selector.register(sock, selectors.EVENT_WRITE, "connecting")

    def drop(sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.close()

    for _ in range(count):
        open_one()
    announced = False
    while not stopped:
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "connecting":
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    stats["failed"] += 1
                    drop(sock)
                    open_one()
                    continue
                stats["connected"] += 1
                selector.modify(sock, selectors.EVENT_READ, "open")
                if not announced and stats["connected"] >= count:
                    announced = True
                    print(f"open {count}", flush=True)
            else:  # readable: closed or reset by the server (it is sent nothing else)
                stats["closed_by_server"] += 1
                drop(sock)
                open_one()
    for key in list(selector.get_map().values()):
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        drop(sock)
    return stats


if __name__ == "__main__":
    print(json.dumps(flood(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))), flush=True)
