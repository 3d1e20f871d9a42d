"""Drives scripts/bench-browser: native messaging and HTTP SSE against one `tabagent serve
--mode all` process, then headless Chromium on its /webrtc page. Standard library only.

Usage: bench_browser.py TABAGENT CHROMIUM CALLS TOKENS CONNECTIONS"""

import http.client
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

MODEL = "smollm2"
# Connections opened one after another from one page, for the setup of a connection.
REPEATS = 50


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Native:
    """The native messaging side of `serve --mode all`: its stdin and stdout."""

    def __init__(self, process):
        self.stdin, self.stdout = process.stdin, process.stdout

    def send(self, message):
        body = json.dumps(message).encode()
        self.stdin.write(struct.pack("=I", len(body)) + body)
        self.stdin.flush()

    def receive(self):
        (length,) = struct.unpack("=I", self.stdout.read(4))
        return json.loads(self.stdout.read(length))


def chat_body(tokens, stream):
    return {
        "model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": stream,
    }


def native_stream(native, tokens, ident):
    native.send({"id": ident, "path": "/v1/chat/completions", "body": chat_body(tokens, True)})
    start, count = time.perf_counter(), 0
    while True:
        message = native.receive()
        assert message["id"] == ident and message["status"] == 200, message
        if message.get("done"):
            return count / (time.perf_counter() - start)
        delta = (message["event"].get("choices") or [{}])[0].get("delta", {})
        count += 1 if delta.get("content") else 0


def sse_stream(host, port, tokens):
    connection = http.client.HTTPConnection(host, port)
    connection.request("POST", "/v1/chat/completions", json.dumps(chat_body(tokens, True)),
                       {"content-type": "application/json"})
    start, count = time.perf_counter(), 0
    response = connection.getresponse()
    assert response.status == 200
    for line in response:
        line = line.strip()
        if line == b"data: [DONE]":
            break
        if line.startswith(b"data: "):
            event = json.loads(line[6:])
            delta = (event.get("choices") or [{}])[0].get("delta", {})
            count += 1 if delta.get("content") else 0
    return count / (time.perf_counter() - start)


DRIVER = (Path(__file__).resolve().parent.parent / "tests/browser/webrtc_driver.js").read_text()


def run_page(chromium, url, options):
    """Opens the /webrtc page at `url` in headless Chromium and drives it as its user would
    (tests/browser/webrtc_driver.js with `options`) over the DevTools protocol on a pipe
    (`--remote-debugging-pipe`: commands on the browser's fd 3, replies and events on its fd 4,
    each JSON ending in a NUL byte); returns what happened."""
    with tempfile.TemporaryDirectory() as profile:
        # The shell puts our pipes where Chromium's DevTools pipe is (fds 3 and 4).
        browser = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', chromium, "--headless", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        commands, replies = browser.stdin, browser.stdout
        pending = b""
        next_id = 0

        def call(method, params, session=None, until=None):
            nonlocal pending, next_id
            next_id += 1
            message = {"id": next_id, "method": method, "params": params}
            if session:
                message["sessionId"] = session
            commands.write(json.dumps(message).encode() + b"\0")
            commands.flush()
            result, waited = None, until is None
            while result is None or not waited:
                while b"\0" not in pending:
                    chunk = replies.read1(1 << 16)
                    if not chunk:
                        sys.exit("Chromium closed its DevTools pipe")
                    pending += chunk
                raw, pending = pending.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == next_id:
                    if "error" in reply:
                        sys.exit(f"{method} failed: {reply['error']}")
                    result = reply["result"]
                elif until is not None and until(reply):
                    waited = True
            return result

        try:
            target = call("Target.createTarget", {"url": "about:blank"})
            session = call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
            call("Page.enable", {}, session)
            call("Page.navigate", {"url": f"{url}/webrtc"}, session,
                 until=lambda event: event.get("method") == "Page.loadEventFired")
            evaluated = call("Runtime.evaluate", {"expression": f"({DRIVER})({json.dumps(options)})",
                                                  "awaitPromise": True, "returnByValue": True}, session)
        finally:
            browser.kill()
            browser.wait()
            commands.close()
            replies.close()
    if "exceptionDetails" in evaluated:
        sys.exit(f"the page threw: {evaluated['exceptionDetails']}")
    report = evaluated["result"]["value"]
    if report.get("errors"):
        sys.exit(f"the page failed: {report['errors']}")
    return report


def main():
    binary, chromium, calls, tokens, connections = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    server = subprocess.Popen([binary, "serve", "--mode", "all", "--port", "0", "--model", MODEL],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in server.stderr:
            line = line.decode()
            if "tabagent listening on " in line:
                url = line.split("tabagent listening on ")[1].strip()
                break
        else:
            sys.exit("tabagent serve --mode all exited before it listened")
        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
        parts = urllib.parse.urlsplit(url)
        native = Native(server)

        for i in range(200):
            native.send({"id": i, "path": "/v1/health"})
            native.receive()
        times = []
        for i in range(calls):
            start = time.perf_counter()
            native.send({"id": i, "path": "/v1/health"})
            reply = native.receive()
            times.append((time.perf_counter() - start) * 1000)
            assert reply["status"] == 200, reply
        print(f"native messaging round trip (GET /v1/health, {calls} calls): "
              f"p50 {percentile(times, 0.5):.3f} ms, p99 {percentile(times, 0.99):.3f} ms")

        native_stream(native, 16, "warm")
        sse_stream(parts.hostname, parts.port, 16)
        best_native = best_sse = 0.0
        for round_ in range(3):
            n = native_stream(native, tokens, f"s{round_}")
            h = sse_stream(parts.hostname, parts.port, tokens)
            best_native, best_sse = max(best_native, n), max(best_sse, h)
            print(f"round {round_}: native messaging {n:.1f} tokens/s, HTTP SSE {h:.1f} tokens/s")
        print(f"streamed tokens/s ({tokens} tokens, best of 3): native messaging {best_native:.1f}, "
              f"HTTP SSE {best_sse:.1f}; ratio native/SSE {best_native / best_sse:.3f}")

        # Each page load starts a fresh Chromium: its first connection includes the browser's own
        # WebRTC start-up. The first load then opens `REPEATS` more connections from the same
        # page: the setup of a connection from a running browser.
        setups, phases, p50s, p99s, repeats = [], [], [], [], []
        for i in range(connections):
            options = {"bench": calls // 4, "connections": REPEATS} if i == 0 else {"bench": 20}
            report = run_page(chromium, url, options)
            setups.append(report["setup_ms"])
            phases.append(report["setup_phases"])
            if i == 0:
                p50s.append(report["bench"]["p50_ms"])
                p99s.append(report["bench"]["p99_ms"])
                repeats = [more["setup_ms"] for more in report["more_setups"]]
        print(f"WebRTC setup on loopback, new connection from a running page (offer → open data "
              f"channel, {REPEATS} connections): median {percentile(repeats, 0.5):.1f} ms, "
              f"p90 {percentile(repeats, 0.9):.1f} ms, worst {max(repeats):.1f} ms (target < 50 ms)")
        print(f"WebRTC setup, first connection of a freshly started Chromium ({connections} page loads): "
              f"median {percentile(setups, 0.5):.1f} ms, worst {max(setups):.1f} ms")
        steps = ["offer_made", "answer_received", "ice_connected", "connection_connected", "channel_open"]
        print("  its steps, median ms from new RTCPeerConnection() (Chromium makes its offer before "
              "tabagent is contacted): " + ", ".join(
                  f"{step} {percentile([p[step] for p in phases if step in p], 0.5):.1f}" for step in steps))
        print(f"data-channel round trip (GET /v1/health from the page, {calls // 4} calls): "
              f"p50 {p50s[0]:.3f} ms, p99 {p99s[0]:.3f} ms")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
