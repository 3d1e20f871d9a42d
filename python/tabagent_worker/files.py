"""Model files, asked of tabagent (seed 004's RustFileProvider): the worker never downloads and
never reads the model store itself. Files arrive in chunks over tabagent's `ModelFiles` service;
loaded models keep what they need in memory, and a model that needs a directory gets a private
temporary one that is removed once it is loaded."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import grpc

from .errors import InvalidInput, ModelMissing, WorkerError
from .protocol import pb, rpc


class FileProvider:
    """A client of tabagent's ModelFiles service on a Unix socket."""

    def __init__(self, socket_path: str):
        # gRPC would send the socket's path as the HTTP/2 authority, which tabagent's server
        # (hyper) refuses as malformed: name a plain host instead.
        self._channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            options=[("grpc.default_authority", "localhost")],
        )
        self._files = rpc.ModelFilesStub(self._channel)

    def read(self, model_id: str, path: str) -> bytes:
        """The whole of file `path` of model `model_id`."""
        chunks = []
        try:
            for chunk in self._files.Get(pb.FileRequest(model_id=model_id, path=path)):
                chunks.append(chunk.data)
        except grpc.RpcError as err:
            raise _translate(err, model_id, path) from None
        return b"".join(chunks)

    def list(self, model_id: str) -> list[str]:
        """The files of model `model_id`."""
        try:
            return list(self._files.List(pb.FileListRequest(model_id=model_id)).paths)
        except grpc.RpcError as err:
            raise _translate(err, model_id, "") from None

    @contextlib.contextmanager
    def directory(self, model_id: str):
        """A private temporary directory holding every file of `model_id`, removed afterwards
        (for libraries that load only from a directory)."""
        root = Path(tempfile.mkdtemp(prefix="tabagent-model-"))
        os.chmod(root, 0o700)
        try:
            for path in self.list(model_id):
                relative = PurePosixPath(path)
                if relative.is_absolute() or ".." in relative.parts:
                    raise InvalidInput(f"tabagent listed an unsafe path {path!r}")
                target = root.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.read(model_id, path))
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def close(self):
        self._channel.close()


def _translate(err: grpc.RpcError, model_id: str, path: str) -> WorkerError:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelMissing(details or f"no file {path!r} in model {model_id!r}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(details)
    return WorkerError(f"tabagent's file service failed: {details}")
