"""The generated protocol modules (`proto/ml_worker.proto`).

The supervisor generates them with grpcio-tools into `_generated/` beside this package when it
prepares the worker's environment; grpcio-tools writes absolute imports (`import
ml_worker_pb2`), so that directory goes on the import path here, once.
"""

import sys
from pathlib import Path

_GENERATED = Path(__file__).resolve().parent / "_generated"
if str(_GENERATED) not in sys.path:
    sys.path.insert(0, str(_GENERATED))

import ml_worker_pb2 as pb  # noqa: E402
import ml_worker_pb2_grpc as rpc  # noqa: E402

__all__ = ["pb", "rpc"]
