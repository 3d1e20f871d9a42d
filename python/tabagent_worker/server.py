"""The worker's gRPC server: model management, vision, speech and Transformers on a Unix socket,
with the standard gRPC health service, which says SERVING once every service is registered.

The worker is tabagent's child and nothing else: it dies with its parent (Linux's parent-death
signal, and a check that the parent is still the one that started it), and stops on SIGTERM
after the calls in flight finish (up to a grace period)."""

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import speech, transformers_models, vision
from .errors import abort
from .files import FileProvider
from .lane import Lane
from .models import Registry
from .protocol import pb, rpc

log = logging.getLogger("tabagent_worker")

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int):
    """Asks Linux for SIGTERM when the parent goes, then checks it has not gone already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("no parent-death signal on this system")
    if parent and os.getppid() != parent:
        sys.exit("tabagent_worker: the parent process is gone")


class Models(rpc.ModelsServicer):
    def __init__(self, registry: Registry):
        self.registry = registry

    def Load(self, request, context):
        try:
            return self.registry.load(request.model_id, request.kind).describe()
        except Exception as err:
            abort(context, err)

    def Unload(self, request, context):
        return pb.UnloadReply(unloaded=self.registry.unload(request.model_id))

    def List(self, request, context):
        return pb.ListReply(models=[m.describe() for m in self.registry.list()])


class Vision(rpc.VisionServicer):
    def __init__(self, registry: Registry):
        self.registry = registry

    def one(self, request):
        model = self.registry.get(request.model_id, pb.MODEL_KIND_MEDIAPIPE)
        return vision.analyze(model, request)

    def Analyze(self, request, context):
        try:
            return self.one(request)
        except Exception as err:
            abort(context, err)

    def AnalyzeStream(self, requests, context):
        try:
            for request in requests:
                yield self.one(request)
        except Exception as err:
            abort(context, err)


class Speech(rpc.SpeechServicer):
    def __init__(self, registry: Registry):
        self.registry = registry

    def Transcribe(self, request, context):
        try:
            model = self.registry.get(request.model_id, pb.MODEL_KIND_WHISPER)
            return model.transcribe(request)
        except Exception as err:
            abort(context, err)


class Transformers(rpc.TransformersServicer):
    def __init__(self, registry: Registry):
        self.registry = registry

    def Embed(self, request, context):
        try:
            model = self.registry.get(request.model_id, pb.MODEL_KIND_SENTENCE_TRANSFORMERS)
            return model.embed(request)
        except Exception as err:
            abort(context, err)

    def Generate(self, request, context):
        try:
            model = self.registry.get(request.model_id, pb.MODEL_KIND_TEXT_GENERATION)
            cancelled = threading.Event()
            context.add_callback(cancelled.set)
            yield from model.generate(request, cancelled)
        except Exception as err:
            abort(context, err)


LOADERS = {
    pb.MODEL_KIND_MEDIAPIPE: vision.load,
    pb.MODEL_KIND_WHISPER: speech.load,
    pb.MODEL_KIND_SENTENCE_TRANSFORMERS: transformers_models.load_embedder,
    pb.MODEL_KIND_TEXT_GENERATION: transformers_models.load_generator,
}

# Frames and audio files travel in one message each.
MAX_MESSAGE = 64 * 1024 * 1024

# Vision lane connections at once: tabagent opens as many as the frames it sends at once
# (--threads); more would be a bug, refused rather than given a thread each.
LANE_CONNECTIONS = 64


def serve(
    socket_path: str,
    lane_socket: str,
    files_socket: str,
    threads: int,
    grace: float,
) -> int:
    files = FileProvider(files_socket)
    registry = Registry(files, LOADERS)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="call"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    rpc.add_ModelsServicer_to_server(Models(registry), server)
    vision_service = Vision(registry)
    rpc.add_VisionServicer_to_server(vision_service, server)
    rpc.add_SpeechServicer_to_server(Speech(registry), server)
    rpc.add_TransformersServicer_to_server(Transformers(registry), server)
    health_service = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    if server.add_insecure_port(f"unix://{socket_path}") == 0:
        log.error("could not listen on %s", socket_path)
        return 1
    try:
        lane = Lane(lane_socket, vision_service.one, MAX_MESSAGE, LANE_CONNECTIONS)
    except OSError as err:
        log.error("could not listen on %s: %s", lane_socket, err)
        return 1
    lane.start()
    server.start()
    stopping = threading.Event()

    def stop(signum, _frame):
        log.info("stopping on signal %d", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    health_service.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("serving on %s (pid %d)", socket_path, os.getpid())
    stopping.wait()
    health_service.enter_graceful_shutdown()
    stopped = server.stop(grace)
    lane.stop(grace)
    stopped.wait()
    registry.close()
    files.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tabagent_worker", description=__doc__)
    parser.add_argument("--socket", required=True, help="the Unix socket to serve on")
    parser.add_argument("--lane-socket", required=True, help="the Unix socket for single frames")
    parser.add_argument("--files-socket", required=True, help="tabagent's ModelFiles socket")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process goes")
    parser.add_argument("--threads", type=int, default=4, help="calls served at once")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds calls get to finish on stop")
    args = parser.parse_args(argv)
    # Logs go to stderr one line each, as tabagent forwards them into its own log.
    logging.basicConfig(
        level=os.environ.get("TABAGENT_WORKER_LOG", "INFO").upper(),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    die_with_parent(args.parent_pid)
    return serve(
        args.socket, args.lane_socket, args.files_socket, args.threads, args.grace
    )
