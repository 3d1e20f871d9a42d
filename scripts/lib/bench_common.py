"""What the Python benchmarks share: servers in their own process groups, ports, logs."""
import http.client, os, signal, socket, subprocess, sys, time
from pathlib import Path


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg, tool=None):
    name = tool or Path(sys.argv[0]).name
    print(f"{name}: error: {msg}", file=sys.stderr)
    sys.exit(1)


def exit_on_signals():
    """SIGTERM and SIGHUP end the run as Ctrl-C does, so `finally` blocks stop the servers (they
    run in process groups of their own, which a signal to the benchmark does not reach)."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Server:
    """A server process in its own process group, logging to a file."""

    def __init__(self, label, cmd, port, health, log_path):
        self.label, self.cmd, self.port, self.health, self.log_path = label, cmd, port, health, log_path
        self.log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as e:
            self.log.close()
            die(f"cannot start {label} ({cmd[0]}): {e}")

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with code {self.proc.returncode} before becoming ready.\n"
                                   f"command: {' '.join(self.cmd)}\n--- last lines of {self.log_path} ---\n{tail(self.log_path)}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", self.health)
                r = c.getresponse(); r.read(); c.close()
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f}s (GET {self.health} on port {self.port}).\n"
                           f"--- last lines of {self.log_path} ---\n{tail(self.log_path)}")

    def pause(self):
        """SIGSTOP: an idle server's threads take no CPU from the one measured."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            try:  # it may be SIGSTOPped between turns
                os.killpg(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # reap anything left in the group (children of the server)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def tabagent_and_llama_server(tabagent_bin, data, llama_server_bin, model, threads, ctx, work, config=None):
    """tabagent (serving the model imported as `bench-model` under `data`) and llama-server
    (`--jinja`) on the same GGUF, threads and context, one sequence each, on free ports:
    (servers by label, ports by label). Neither is waited for yet."""
    ports = {"tabagent": free_port(), "llama-server": free_port()}
    options = ["--config", str(config)] if config else []
    servers = {
        "tabagent": Server("tabagent", [tabagent_bin, "--data-dir", str(data), *options, "serve",
                                        "--host", "127.0.0.1", "--port", str(ports["tabagent"]),
                                        "--model", "bench-model", "--threads", str(threads),
                                        "--parallel", "1", "--ctx-size", str(ctx)],
                           ports["tabagent"], "/v1/health/ready", work / "tabagent.log"),
        "llama-server": Server("llama-server", [llama_server_bin, "-m", model, "--jinja", "--host", "127.0.0.1",
                                                "--port", str(ports["llama-server"]), "-t", str(threads),
                                                "-tb", str(threads), "-c", str(ctx), "-np", "1", "--no-webui"],
                               ports["llama-server"], "/health", work / "llama-server.log"),
    }
    return servers, ports
