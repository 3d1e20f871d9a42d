"""Errors the services raise, each with the gRPC status tabagent maps to an HTTP status."""

import grpc


class WorkerError(Exception):
    """An error with the gRPC status it is reported as."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(WorkerError):
    """The caller's input is unusable (not an image, no audio, an unknown task)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelMissing(WorkerError):
    """tabagent has no such model or file."""

    code = grpc.StatusCode.NOT_FOUND


class NotInstalled(WorkerError):
    """An optional part of the worker (Transformers) is not installed in its environment."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def status_of(error: Exception) -> "tuple[grpc.StatusCode, str]":
    """`error`'s status: a WorkerError's own, INTERNAL for anything else."""
    if isinstance(error, WorkerError):
        return error.code, error.message
    return grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"


def abort(context: grpc.ServicerContext, error: Exception):
    """Ends the call with `error`'s status."""
    context.abort(*status_of(error))
