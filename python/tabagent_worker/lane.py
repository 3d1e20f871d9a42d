"""The vision lane: single frames from tabagent on a plain Unix socket beside the gRPC one.

Python's gRPC server costs about 0.5 ms a call on two cores, however small the call: its polling
thread hands every call to a pool thread and back twice. A camera frame's whole budget for
getting from tabagent to MediaPipe is about that. So tabagent sends single frames here instead,
with the same messages and the same errors as `Vision.Analyze`:

- a request is a 4-byte little-endian length, then a `VisionRequest`;
- an answer is a 4-byte little-endian length, then a `LaneReply` (the `VisionReply`, or the
  gRPC status code and message `Vision.Analyze` would have ended with).

tabagent keeps a few connections open (as many as the frames it sends at once, `--threads`) and
sends one request at a time on each; each connection has a thread here, blocked in `recv`
between requests (which holds no lock). The socket is in
the worker's private directory, like the gRPC one. Everything else (models, streams, speech,
Transformers, health) stays on gRPC."""

import logging
import socket
import struct
import threading
from typing import Callable

from .errors import status_of
from .protocol import pb

log = logging.getLogger(__name__)

HEADER = struct.Struct("<I")


class Lane:
    """Serves `handle` (a VisionRequest → VisionReply function raising the services' errors)."""

    def __init__(
        self,
        path: str,
        handle: Callable[["pb.VisionRequest"], "pb.VisionReply"],
        max_message: int,
        max_connections: int,
    ):
        self.handle = handle
        self.max_message = max_message
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(max_connections)
        self.slots = threading.BoundedSemaphore(max_connections)
        # Requests being answered, so that stopping can wait for them.
        self.busy = 0
        self.idle = threading.Condition()
        self.stopping = False

    def start(self):
        threading.Thread(target=self._accept, name="lane", daemon=True).start()

    def stop(self, grace: float):
        """Takes no more connections and waits up to `grace` seconds for answers in progress."""
        with self.idle:
            self.stopping = True
        try:
            # Wakes the thread blocked in accept (closing alone does not, on Linux).
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.idle:
            self.idle.wait_for(lambda: self.busy == 0, timeout=grace)

    def _accept(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            if not self.slots.acquire(blocking=False):
                log.warning("vision lane: too many connections; one refused")
                connection.close()
                continue
            try:
                threading.Thread(
                    target=self._serve, args=(connection,), name="lane-call", daemon=True
                ).start()
            except Exception as err:  # noqa: BLE001 - no thread: this connection only is lost
                log.error("vision lane: no thread for a connection: %s", err)
                self.slots.release()
                connection.close()

    def _serve(self, connection: socket.socket):
        try:
            with connection:
                while True:
                    request = self._receive(connection)
                    if request is None:
                        return
                    with self.idle:
                        if self.stopping:
                            return
                        self.busy += 1
                    try:
                        answer = self._answer(request).SerializeToString()
                        connection.sendall(HEADER.pack(len(answer)) + answer)
                    finally:
                        with self.idle:
                            self.busy -= 1
                            self.idle.notify_all()
        except OSError as err:
            # tabagent closed the connection or is gone.
            log.debug("vision lane: connection ended: %s", err)
        except Exception:  # noqa: BLE001 - a bug here ends this connection, not the lane
            log.exception("vision lane: connection failed")
        finally:
            self.slots.release()

    def _receive(self, connection: socket.socket):
        """The next request, or None when tabagent closed the connection between requests."""
        header = _read_exactly(connection, HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        if length > self.max_message:
            raise OSError(f"a request of {length} bytes is over the limit")
        body = _read_exactly(connection, length)
        if body is None:
            raise OSError("the connection ended inside a request")
        return body

    def _answer(self, body: bytearray) -> "pb.LaneReply":
        try:
            request = pb.VisionRequest.FromString(body)
        except Exception as err:  # noqa: BLE001 - a malformed message is the caller's mistake
            return pb.LaneReply(error=pb.LaneError(code=3, message=f"malformed request: {err}"))
        try:
            return pb.LaneReply(reply=self.handle(request))
        except Exception as err:  # noqa: BLE001 - every error becomes the caller's answer
            code, message = status_of(err)
            return pb.LaneReply(error=pb.LaneError(code=code.value[0], message=message))


def _read_exactly(connection: socket.socket, size: int):
    """`size` bytes, or None if the connection ends before the first; OSError if it ends after."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = connection.recv_into(view[received:])
        if count == 0:
            if received == 0:
                return None
            raise OSError("the connection ended inside a message")
        received += count
    return buffer
