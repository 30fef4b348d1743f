"""A ``socketserver`` server served from a thread, for the tests' receivers and stand-ins.

Not ``serve_forever``: its ``shutdown()`` waits for ever when it comes before the thread
has begun serving (the standard library's known race, which a loaded machine does hit in a
short test). Here the thread handles one request at a time with a short timeout and looks
at a stop flag in between; ``stop()`` sets it, joins the thread and closes the socket."""

from __future__ import annotations

import socketserver
import threading


class Serving:
    def __init__(self, server: socketserver.BaseServer, poll: float = 0.05) -> None:
        self.server = server
        server.timeout = poll
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.server.handle_request()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.server.server_close()
