#!/usr/bin/env python3
"""Tool-call accuracy and speed: tabagent against llama.cpp's llama-server (`--jinja`) on the
same GGUF, threads, context and greedy sampling, side by side in one run.

Each case is a user request, the tools offered (one to four) and the call expected. A case is
right when the answer calls the expected function (only it) with arguments valid against its
schema and equal to the expected values (strings compared without case or surrounding space).
It runs each case with `tool_choice` `auto` and `required` (`--choices`), streamed and not, on
each side (the servers take turns case by case, the order alternating: the other is
SIGSTOPped), and prints per mode: right answers, calls that are well-formed (JSON arguments
valid against the schema), completion tokens per second of wall time, completion tokens and
seconds per answer; streamed, also the prompt's tokens (each side renders its own) and the
seconds to the first piece of the answer (tabagent sends a call whole once the model has
written it; llama-server streams text as it comes); and the prompt and decode speed each server
reports of itself (`timings`, llama.cpp server's shape, which tabagent also sends: prompt tokens
over the time to the first token; decode steps over the time from the first token to the last
sampled, each server counting its own steps as its `predicted_per_second` does: the tokens
sampled after the first, which came from the prompt's logits, an end-of-generation token
included; tokens over time would not do, as llama-server counts that last token in
`predicted_n` and tabagent does not), summed over the set. Python stdlib plus jsonschema (the
SDK tests' venv has it).
"""
import argparse, http.client, json, os, sys, tempfile, time
from pathlib import Path

import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from bench_common import exit_on_signals, log, tabagent_and_llama_server  # noqa: E402

CACHE = Path(os.environ.get("TABAGENT_CACHE", str(Path.home() / ".cache/tabagent")))


def fn(name, description, properties, required=None):
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties,
                       "required": required if required is not None else list(properties)}}}


S, I, N = {"type": "string"}, {"type": "integer"}, {"type": "number"}
TOOLS = {
    "get_weather": fn("get_weather", "Get the current weather in a city",
                      {"city": S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}),
    "add": fn("add", "Add two integers", {"a": I, "b": I}),
    "multiply": fn("multiply", "Multiply two numbers", {"a": N, "b": N}),
    "convert_currency": fn("convert_currency", "Convert an amount of money between currencies (ISO codes)",
                           {"amount": N, "from_currency": S, "to_currency": S}),
    "set_timer": fn("set_timer", "Set a timer for a number of minutes", {"minutes": I}),
    "get_stock_price": fn("get_stock_price", "Get the latest price of a stock by its ticker symbol",
                          {"ticker": S}),
    "translate": fn("translate", "Translate text into another language",
                    {"text": S, "target_language": S}),
    "book_flight": fn("book_flight", "Book a flight between two cities on a date (YYYY-MM-DD)",
                      {"origin": S, "destination": S, "date": S}),
    "send_email": fn("send_email", "Send an email", {"to": S, "subject": S, "body": S}),
    "get_time": fn("get_time", "Get the current time in a time zone (IANA name)", {"timezone": S}),
}

# (prompt, tools offered, expected function, expected arguments: every key given must match)
CASES = [
    ("What's the weather in Paris in celsius?", ["get_weather"], "get_weather", {"city": "Paris", "unit": "celsius"}),
    ("How hot is it in Phoenix right now, in fahrenheit?", ["get_weather"], "get_weather", {"city": "Phoenix", "unit": "fahrenheit"}),
    ("Tell me the current weather in Tokyo using celsius.", ["get_weather", "get_time"], "get_weather", {"city": "Tokyo", "unit": "celsius"}),
    ("Is it raining in London? Give me the temperature in celsius.", ["get_weather", "add"], "get_weather", {"city": "London", "unit": "celsius"}),
    ("Weather report for Berlin in fahrenheit please.", ["get_weather", "translate", "get_time"], "get_weather", {"city": "Berlin", "unit": "fahrenheit"}),
    ("What is 17 plus 25?", ["add"], "add", {"a": 17, "b": 25}),
    ("Add 100 and 250.", ["add", "multiply"], "add", {"a": 100, "b": 250}),
    ("What is the sum of 8 and 13?", ["add", "get_weather"], "add", {"a": 8, "b": 13}),
    ("Compute 999 + 1.", ["add", "multiply", "set_timer"], "add", {"a": 999, "b": 1}),
    ("Please add 42 to 58.", ["multiply", "add"], "add", {"a": 42, "b": 58}),
    ("What is 6 times 7?", ["multiply"], "multiply", {"a": 6, "b": 7}),
    ("Multiply 2.5 by 4.", ["add", "multiply"], "multiply", {"a": 2.5, "b": 4}),
    ("What's 12 multiplied by 12?", ["multiply", "convert_currency"], "multiply", {"a": 12, "b": 12}),
    ("Calculate the product of 3 and 15.", ["multiply", "add", "get_time"], "multiply", {"a": 3, "b": 15}),
    ("How much is 9 times 11?", ["get_weather", "multiply"], "multiply", {"a": 9, "b": 11}),
    ("Convert 100 USD to EUR.", ["convert_currency"], "convert_currency", {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}),
    ("How many yen is 50 US dollars? Use codes USD and JPY.", ["convert_currency", "multiply"], "convert_currency", {"amount": 50, "from_currency": "USD", "to_currency": "JPY"}),
    ("Change 20 GBP into USD.", ["convert_currency", "add"], "convert_currency", {"amount": 20, "from_currency": "GBP", "to_currency": "USD"}),
    ("Convert 75 EUR to CHF.", ["get_stock_price", "convert_currency"], "convert_currency", {"amount": 75, "from_currency": "EUR", "to_currency": "CHF"}),
    ("I have 1000 CAD, how much is that in AUD?", ["convert_currency", "get_weather", "add"], "convert_currency", {"amount": 1000, "from_currency": "CAD", "to_currency": "AUD"}),
    ("Set a timer for 10 minutes.", ["set_timer"], "set_timer", {"minutes": 10}),
    ("Start a 25 minute timer.", ["set_timer", "get_time"], "set_timer", {"minutes": 25}),
    ("Remind me in 5 minutes with a timer.", ["set_timer", "send_email"], "set_timer", {"minutes": 5}),
    ("Timer: 45 minutes, please.", ["add", "set_timer"], "set_timer", {"minutes": 45}),
    ("Put a timer on for 90 minutes.", ["set_timer", "multiply", "get_weather"], "set_timer", {"minutes": 90}),
    ("What's the price of AAPL stock?", ["get_stock_price"], "get_stock_price", {"ticker": "AAPL"}),
    ("Look up the MSFT share price.", ["get_stock_price", "convert_currency"], "get_stock_price", {"ticker": "MSFT"}),
    ("How is TSLA trading today?", ["get_weather", "get_stock_price"], "get_stock_price", {"ticker": "TSLA"}),
    ("Get me the latest quote for NVDA.", ["get_stock_price", "add", "get_time"], "get_stock_price", {"ticker": "NVDA"}),
    ("Current stock price of GOOG?", ["translate", "get_stock_price"], "get_stock_price", {"ticker": "GOOG"}),
    ("Translate 'good morning' into French.", ["translate"], "translate", {"text": "good morning", "target_language": "French"}),
    ("How do you say 'thank you' in Spanish? Use the translator.", ["translate", "send_email"], "translate", {"text": "thank you", "target_language": "Spanish"}),
    ("Translate 'where is the station' to German.", ["get_weather", "translate"], "translate", {"text": "where is the station", "target_language": "German"}),
    ("Please translate 'I love cheese' into Italian.", ["translate", "get_time", "add"], "translate", {"text": "I love cheese", "target_language": "Italian"}),
    ("Translate the word 'cat' into Japanese.", ["book_flight", "translate"], "translate", {"text": "cat", "target_language": "Japanese"}),
    ("Book a flight from Boston to Denver on 2026-03-14.", ["book_flight"], "book_flight", {"origin": "Boston", "destination": "Denver", "date": "2026-03-14"}),
    ("I need a flight from Madrid to Rome on 2026-05-01.", ["book_flight", "get_weather"], "book_flight", {"origin": "Madrid", "destination": "Rome", "date": "2026-05-01"}),
    ("Fly me from Seattle to Chicago, date 2026-07-04.", ["get_time", "book_flight"], "book_flight", {"origin": "Seattle", "destination": "Chicago", "date": "2026-07-04"}),
    ("Reserve a flight Paris to Lisbon on 2026-09-30.", ["book_flight", "convert_currency", "translate"], "book_flight", {"origin": "Paris", "destination": "Lisbon", "date": "2026-09-30"}),
    ("Book me on a plane from Oslo to Helsinki for 2026-12-24.", ["send_email", "book_flight"], "book_flight", {"origin": "Oslo", "destination": "Helsinki", "date": "2026-12-24"}),
    ("Send an email to bob@example.com with the subject 'Lunch'.", ["send_email"], "send_email", {"to": "bob@example.com", "subject": "Lunch"}),
    ("Email alice@example.org, subject 'Report', saying the report is done.", ["send_email", "translate"], "send_email", {"to": "alice@example.org", "subject": "Report"}),
    ("Write to team@example.net with subject 'Standup moved' and tell them it is at 10.", ["get_time", "send_email"], "send_email", {"to": "team@example.net", "subject": "Standup moved"}),
    ("Send mail to carol@example.com, subject 'Invoice', body 'Attached.'", ["send_email", "add", "set_timer"], "send_email", {"to": "carol@example.com", "subject": "Invoice", "body": "Attached."}),
    ("Drop dave@example.com a note with subject 'Hi' and body 'Call me.'", ["book_flight", "send_email"], "send_email", {"to": "dave@example.com", "subject": "Hi", "body": "Call me."}),
    ("What time is it in Europe/Paris?", ["get_time"], "get_time", {"timezone": "Europe/Paris"}),
    ("Tell me the current time in America/New_York.", ["get_time", "get_weather"], "get_time", {"timezone": "America/New_York"}),
    ("Current time for the Asia/Tokyo time zone?", ["set_timer", "get_time"], "get_time", {"timezone": "Asia/Tokyo"}),
    ("What's the time in Australia/Sydney right now?", ["get_time", "convert_currency", "add"], "get_time", {"timezone": "Australia/Sydney"}),
    ("Give me the time in UTC (timezone UTC).", ["translate", "get_time"], "get_time", {"timezone": "UTC"}),
    ("Check the weather in Madrid in celsius and nothing else.", ["get_weather", "book_flight", "get_time", "add"], "get_weather", {"city": "Madrid", "unit": "celsius"}),
    ("Add 7 and 35 for me.", ["get_stock_price", "translate", "send_email", "add"], "add", {"a": 7, "b": 35}),
]


def post(port, body, timeout):
    """One chat request: (calls [(name, arguments text)], completion tokens, content, (timing,
    server)). `timing` (streamed only): prompt tokens and seconds to the first piece of the
    answer; `server`: the server's own `timings` (llama.cpp server's shape), when it sends them."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = time.monotonic()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        text = response.read().decode(errors="replace")
        conn.close()
        return None, 0, f"HTTP {response.status}: {text[:200]}", (None, None)
    if not body.get("stream"):
        reply = json.loads(response.read())
        conn.close()
        message = reply["choices"][0]["message"]
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        return calls, reply.get("usage", {}).get("completion_tokens", 0), message.get("content"), \
            (None, reply.get("timings"))
    calls, tokens, content, prompt_tokens = {}, 0, "", 0
    first = last = server = None
    for raw in response:
        line = raw.decode(errors="replace").strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        server = chunk.get("timings") or server
        if chunk.get("usage"):
            tokens = chunk["usage"].get("completion_tokens", tokens)
            prompt_tokens = chunk["usage"].get("prompt_tokens", prompt_tokens)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):
                last = time.monotonic()
                first = first or last
            content += delta.get("content") or ""
            for piece in delta.get("tool_calls") or []:
                call = calls.setdefault(piece.get("index", 0), ["", ""])
                function = piece.get("function") or {}
                call[0] += function.get("name") or ""
                call[1] += function.get("arguments") or ""
    conn.close()
    timing = (prompt_tokens, first - sent) if first else None
    return [tuple(c) for _, c in sorted(calls.items())], tokens, content, (timing, server)


def same(expected, actual):
    if isinstance(expected, str):
        return isinstance(actual, str) and expected.strip().lower() == actual.strip().lower()
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return isinstance(actual, (int, float)) and not isinstance(actual, bool) and float(actual) == float(expected)
    return expected == actual


def judge(case, calls):
    """(well_formed, right) for one answer."""
    _, offered, name, expected = case
    if not calls:
        return False, False
    well_formed = True
    for called, arguments in calls:
        try:
            parsed = json.loads(arguments)
            schema = TOOLS[called]["function"]["parameters"] if called in offered else None
            if schema is None:
                well_formed = False
                continue
            jsonschema.validate(parsed, schema)
        except (ValueError, jsonschema.ValidationError):
            well_formed = False
    if len(calls) != 1 or calls[0][0] != name or not well_formed:
        return well_formed, False
    parsed = json.loads(calls[0][1])
    return True, all(same(value, parsed.get(key)) for key, value in expected.items())


class Tally:
    """One side's results over a set of cases."""

    def __init__(self):
        self.right = self.formed = self.tokens = 0
        self.seconds = 0.0
        # Streamed: prompt tokens, and the seconds to the first piece of the answer.
        self.prompt_tokens = self.first_seconds = self.timed = 0
        # The server's own clock: prompt and decode tokens and milliseconds.
        self.server = {"prompt_n": 0, "prompt_ms": 0.0, "steps": 0, "predicted_ms": 0.0}
        self.misses = []

    def ask(self, port, case, choice, stream, timeout):
        prompt, offered, _, _ = case
        body = {"model": "bench-model", "temperature": 0, "max_tokens": 160, "stream": stream,
                "messages": [{"role": "user", "content": prompt}],
                "tools": [TOOLS[t] for t in offered], "tool_choice": choice}
        if stream:
            body["stream_options"] = {"include_usage": True}
        started = time.monotonic()
        calls, used, content, (timing, reported) = post(port, body, timeout)
        self.seconds += time.monotonic() - started
        self.tokens += used
        if reported:
            for key in ("prompt_n", "prompt_ms", "predicted_ms"):
                self.server[key] += reported.get(key) or 0
            self.server["steps"] += round((reported.get("predicted_per_second") or 0)
                                          * (reported.get("predicted_ms") or 0) / 1000)
        if timing:
            self.prompt_tokens += timing[0]
            self.first_seconds += timing[1]
            self.timed += 1
        ok_formed, ok_right = judge(case, calls or [])
        self.formed += ok_formed
        self.right += ok_right
        if not ok_right and len(self.misses) < 3:
            self.misses.append((prompt, calls, (content or "")[:120]))

    def row(self, n):
        rate = self.tokens / self.seconds if self.seconds else 0
        streamed = (f"{self.prompt_tokens / self.timed:7.0f} {self.first_seconds / self.timed:14.2f}"
                    if self.timed else f"{'':7} {'':14}")
        s = self.server
        own = [s["prompt_n"] / s["prompt_ms"] * 1000 if s["prompt_ms"] else None,
               s["steps"] / s["predicted_ms"] * 1000 if s["predicted_ms"] else None]
        own = " ".join(f"{v:11.1f}" if v else f"{'-':>11}" for v in own)
        return (f"{self.right / n:7.0%} {self.formed / n:12.0%} {rate:9.1f} "
                f"{self.tokens / n:14.1f} {self.seconds / n:9.2f} {streamed} {own}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the GGUF file both sides serve")
    p.add_argument("--tabagent-bin", required=True)
    p.add_argument("--llama-server-bin", default=str(CACHE / "peer/bin/llama-server"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--cases", type=int, default=len(CASES))
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--streams", choices=["both", "whole", "streamed"], default="both")
    p.add_argument("--choices", type=lambda v: v.split(","), default=["auto", "required"],
                   help="tool_choice values to run, comma-separated (default auto,required)")
    a = p.parse_args()
    exit_on_signals()
    cases = CASES[: a.cases]
    streams = {"both": (False, True), "whole": (False,), "streamed": (True,)}[a.streams]
    n = len(cases)
    print(f"tool calls, {n} cases, {a.model}, {a.threads} threads, greedy, {time.strftime('%Y-%m-%d')}")
    print(f"{'mode':24} {'side':13} {'right':>7} {'well-formed':>12} {'tokens/s':>9} "
          f"{'tokens/answer':>14} {'s/answer':>9} {'prompt':>7} {'first piece s':>14} "
          f"{'prompt t/s':>11} {'decode t/s':>11}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data = work / "tabagent-data"
        import subprocess
        subprocess.run([a.tabagent_bin, "--data-dir", str(data), "import", a.model, "--name", "bench-model"],
                       check=True, stdout=subprocess.DEVNULL)
        servers, ports = tabagent_and_llama_server(a.tabagent_bin, data, a.llama_server_bin, a.model,
                                                   a.threads, a.ctx, work)
        try:
            for server in servers.values():
                server.wait_ready(a.timeout)
            results = {}
            for choice in a.choices:
                for stream in streams:
                    # The sides take turns case by case (the other SIGSTOPped), the order
                    # alternating, so the machine's drift falls on both alike.
                    log(f"tool_choice={choice} stream={stream}")
                    tallies = {side: Tally() for side in servers}
                    for index, case in enumerate(cases):
                        order = list(servers) if index % 2 == 0 else list(reversed(servers))
                        for side in order:
                            for other, server in servers.items():
                                if other != side:
                                    server.pause()
                            servers[side].resume()
                            tallies[side].ask(ports[side], case, choice, stream, a.timeout)
                    for server in servers.values():
                        server.resume()
                    mode = f"{choice}, {'streamed' if stream else 'whole'}"
                    for side, tally in tallies.items():
                        results[(choice, stream, side)] = tally
                        # Each row as soon as it is known: a run cut short keeps what it measured.
                        print(f"{mode:24} {side:13} {tally.row(n)}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    for (choice, stream, side), r in results.items():
        for prompt, calls, content in r.misses:
            log(f"miss [{side} {choice} stream={stream}] {prompt!r}: calls={calls} content={content!r}")


if __name__ == "__main__":
    main()
