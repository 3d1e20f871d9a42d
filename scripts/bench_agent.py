#!/usr/bin/env python3
"""Agent loops side by side: tabagent's (`POST /v1/responses` with server-side tools) against a
reference loop written with LangChain's `create_agent` (on LangGraph, the most used agent
framework) driving the same GGUF through llama.cpp's llama-server (`--jinja`).

Both sides get the same model, threads, context and greedy sampling, the same system prompt,
the same step budget, and the very same tools: the reference calls tabagent's own tools over
MCP (`/mcp`, through langchain-mcp-adapters), so the tools' code is identical and what differs
is the loop and the engine under it. The task set is ours: 32 multi-step tasks with checkable
answers (look something up in memory then compute, read a workspace file then compute or
answer, run code for a numeric answer, read a file then save a summary to memory). A task
succeeds when its answer holds the expected value (digits compared without separators), or,
for a saving task, when a new note in the memory holds it. Tasks alternate which side goes
first; nothing either side does is visible to the other (tabagent records no runs and recalls
none; notes written are checked and then deleted).

Prints per category and overall: successes and mean wall seconds per task on each side, and
the ratios (tabagent / reference). Needs the venv scripts/bench-agent makes.
"""
import argparse, asyncio, json, os, re, statistics, subprocess, sys, tempfile, time
import http.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from bench_common import exit_on_signals, log, tabagent_and_llama_server  # noqa: E402

# What both loops tell the model (tabagent's default instructions).
SYSTEM = ("You are a helpful assistant that can call tools. Call a tool only when you need a fact or a "
          "computation you do not have. When a tool has answered, use its result to answer the user "
          "directly in plain text; do not call the same tool again with the same arguments.")
TOOLS = ["calculator", "current_time", "memory_search", "graph_lookup", "document_search",
         "list_files", "read_file", "run_code", "memory_write"]

FACTS = [
    "The Orion project has a budget of 4800 euros.",
    "The Lyra team has 14 engineers.",
    "Warehouse B stores 3750 crates.",
    "The Nimbus server costs 212 dollars per month.",
    "The Cobalt library has 86 open issues.",
    "Our office rent is 2650 euros per month.",
    "The Delta dataset has 125000 rows.",
    "Project Vega started with 7 members and has since tripled in size.",
    "The Kestrel sensor samples 48 times per second.",
    "The Atlas bridge is 1350 meters long.",
]
FILES = {
    "inventory.txt": "apples: 120\npears: 45\nplums: 33\n",
    "prices.csv": "item,price\ncoffee,3.50\nbagel,2.25\njuice,4.00\n",
    "team.txt": "Alice - backend\nBob - frontend\nCarol - backend\nDan - design\nEve - backend\n",
    "readings.txt": "12\n15\n9\n20\n14\n",
    "schedule.txt": "Standup 09:15 (15 min)\nReview 11:00 (45 min)\nPlanning 14:30 (60 min)\n",
    "config.ini": "[server]\nport = 8088\nworkers = 6\n",
    "orders.txt": "order 1001: 3 items\norder 1002: 5 items\norder 1003: 4 items\n",
    "route.txt": "Route A is 42 km long.\n",
    "wifi.txt": "The Wi-Fi password is maple-7731.\n",
    "budget.txt": "Q1: 1200\nQ2: 1350\nQ3: 980\nQ4: 1470\n",
    "meeting.txt": "Meeting notes: the Falcon launch moves to March 3 because the supplier is late.\n",
    "recipe.txt": "Pancakes need 3 eggs, 200 g of flour and 300 ml of milk.\n",
}

# (category, task, expected value in the answer; or ("note", value) for a note saved to memory)
TASKS = [
    ("memory+compute", "Find the Orion project's budget in memory, then compute 15% of it.", "720"),
    ("memory+compute", "Look up in memory how many engineers the Lyra team has, then compute how many there will be after hiring 9 more.", "23"),
    ("memory+compute", "Search the memory for how many crates warehouse B stores, then divide that number by 25.", "150"),
    ("memory+compute", "Look up the Nimbus server's monthly cost in memory and compute what it costs for 12 months.", "2544"),
    ("memory+compute", "Find in memory how many open issues the Cobalt library has, then compute how many remain after 39 are closed.", "47"),
    ("memory+compute", "Look up our office rent in memory and compute the rent for a whole year.", "31800"),
    ("memory+compute", "Find how many rows the Delta dataset has in memory, then compute how many batches of 500 rows that makes.", "250"),
    ("memory+compute", "Use the memory to find out how many members Project Vega has now.", "21"),
    ("memory+compute", "Look up how often the Kestrel sensor samples in memory, then compute how many samples it takes in 5 minutes.", "14400"),
    ("memory+compute", "Find the length of the Atlas bridge in memory and convert it to kilometers.", "1.35"),
    ("file+answer", "Read inventory.txt in the docs workspace and compute how many apples and pears there are together.", "165"),
    ("file+answer", "Read prices.csv in the docs workspace and compute the cost of two coffees and one bagel.", "9.25"),
    ("file+answer", "Read team.txt in the docs workspace and count how many people work on backend.", "3"),
    ("file+answer", "Read readings.txt in the docs workspace and compute the average of the readings.", "14"),
    ("file+answer", "Read schedule.txt in the docs workspace and compute the total minutes of meetings.", "120"),
    ("file+answer", "Read config.ini in the docs workspace: how many threads run if each worker runs 4 threads?", "24"),
    ("file+answer", "Read orders.txt in the docs workspace and compute how many items there are in all the orders.", "12"),
    ("file+answer", "Read route.txt in the docs workspace: how many minutes does route A take at 60 km/h?", "42"),
    ("file+answer", "Read wifi.txt in the docs workspace and tell me the Wi-Fi password.", "maple-7731"),
    ("file+answer", "Read budget.txt in the docs workspace and compute the total for the year.", "5000"),
    ("code", "Use run_code to compute the 20th Fibonacci number in Python (F1 = F2 = 1).", "6765"),
    ("code", "Use run_code to count the prime numbers below 1000 in Python.", "168"),
    ("code", "Use run_code to compute the sum of the squares of the numbers 1 to 50 in Python.", "42925"),
    ("code", "Use run_code to compute 2 to the power 40 in Python.", "1099511627776"),
    ("code", "Use run_code to compute in Python how many days there are from 2024-01-01 to 2024-12-25.", "359"),
    ("code", "Use run_code to compute the factorial of 12 in Python.", "479001600"),
    ("code", "Use run_code to count in Python how many times the letter s appears in 'mississippi'.", "4"),
    ("code", "Use run_code to compute the greatest common divisor of 1071 and 462 in Python.", "21"),
    ("code", "Use run_code to compute the sum of the digits of 2**100 in Python.", "115"),
    ("code", "Use run_code to compute in Python the number of ways to choose 5 items out of 20.", "15504"),
    ("file+save", "Read meeting.txt in the docs workspace and save a one-sentence summary of it to memory with memory_write.", ("note", "march 3")),
    ("file+save", "Read recipe.txt in the docs workspace and save to memory, with memory_write, how many eggs the pancakes need.", ("note", "3 eggs")),
]


def normal(text):
    return re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text.lower()).replace("**", "")


def http_json(port, method, path, body=None, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, json.dumps(body) if body is not None else None, {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data)


def notes(port):
    """The ids and texts of the memory's notes (what memory_write saves)."""
    records = http_json(port, "GET", "/v1/memory/knowledge?limit=1000")["data"]
    return {r["id"]: r["text"] for r in records if r["kind"] == "note"}


def judged(expected, answer, port, before):
    """Whether the task succeeded, and the notes it wrote (to delete)."""
    written = {i: t for i, t in notes(port).items() if i not in before}
    if isinstance(expected, tuple):
        return any(expected[1] in normal(t) for t in written.values()), written
    return normal(expected) in normal(answer), written


def tabagent_run(port, task, steps, max_tokens):
    body = {"model": "bench-model", "input": task, "instructions": SYSTEM, "temperature": 0,
            "max_output_tokens": max_tokens, "max_tool_calls": steps - 1, "store": False,
            "tools": [{"type": "tabagent", "allowed_tools": TOOLS, "recall": False}]}
    response = http_json(port, "POST", "/v1/responses", body)
    calls = sum(1 for item in response["output"] if item["type"] == "mcp_call")
    messages = [item for item in response["output"] if item["type"] == "message"]
    answer = messages[-1]["content"][0]["text"] if messages else ""
    return answer, calls


class Reference:
    """LangChain's agent (`create_agent`, on LangGraph: what LangChain's docs recommend) over
    llama-server, with tabagent's tools over MCP (langchain-mcp-adapters)."""

    def __init__(self, llama_port, tabagent_port, steps, max_tokens):
        from langchain.agents import create_agent
        from langchain_mcp_adapters.client import MultiServerMCPClient
        from langchain_openai import ChatOpenAI
        self.steps = steps
        # One event loop for every run: the MCP client's connections belong to it.
        self.loop = asyncio.new_event_loop()
        client = MultiServerMCPClient({"tabagent": {"transport": "streamable_http",
                                                    "url": f"http://127.0.0.1:{tabagent_port}/mcp"}})
        tools = [t for t in self.loop.run_until_complete(client.get_tools()) if t.name in TOOLS]
        assert sorted(t.name for t in tools) == sorted(TOOLS), [t.name for t in tools]
        model = ChatOpenAI(base_url=f"http://127.0.0.1:{llama_port}/v1", api_key="unused", model="bench-model",
                           temperature=0, max_tokens=max_tokens, max_retries=0, timeout=600)
        self.agent = create_agent(model, tools, system_prompt=SYSTEM)

    def run(self, task):
        from langgraph.errors import GraphRecursionError
        try:
            # A step is a model turn and the tool turn after it.
            state = self.loop.run_until_complete(self.agent.ainvoke(
                {"messages": [("user", task)]}, {"recursion_limit": 2 * self.steps}))
        except GraphRecursionError:
            return "", -1
        messages = state["messages"]
        calls = sum(len(getattr(m, "tool_calls", []) or []) for m in messages)
        return messages[-1].content if messages[-1].type == "ai" else "", calls


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the GGUF file both sides run")
    p.add_argument("--tabagent-bin", required=True)
    p.add_argument("--llama-server-bin", required=True)
    p.add_argument("--minilm-dir", required=True)
    p.add_argument("--ort-lib", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--steps", type=int, default=6, help="model turns per task at most (both sides)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per model turn at most")
    p.add_argument("--tasks", type=int, default=len(TASKS))
    p.add_argument("--timeout", type=float, default=300)
    a = p.parse_args()
    exit_on_signals()
    tasks = TASKS[: a.tasks]
    print(f"agent loops, {len(tasks)} tasks, {Path(a.model).name}, {a.threads} threads, ctx {a.ctx}, greedy, "
          f"{a.steps} steps, {a.max_tokens} tokens a turn, {time.strftime('%Y-%m-%d')}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        docs = work / "docs"
        docs.mkdir()
        for name, text in FILES.items():
            (docs / name).write_text(text)
        data = work / "tabagent-data"
        config = work / "tabagent.toml"
        config.write_text(f"""
[models.directories]
minilm = {str(a.minilm_dir)!r}
[onnx]
runtime_library = {str(a.ort_lib)!r}
[memory]
embedding_model = "minilm"
[worker]
mode = "off"
[agent]
allow_code = true
allow_writes = true
record = false
recall = 0
max_steps = {a.steps}
max_step_tokens = {a.max_tokens}
workspaces = {{ docs = {str(docs)!r} }}
""")
        subprocess.run([a.tabagent_bin, "--data-dir", str(data), "import", a.model, "--name", "bench-model"],
                       check=True, stdout=subprocess.DEVNULL)
        servers, ports = tabagent_and_llama_server(a.tabagent_bin, data, a.llama_server_bin, a.model,
                                                   a.threads, a.ctx, work, config=config)
        try:
            for server in servers.values():
                server.wait_ready(a.timeout)
            port = ports["tabagent"]
            for fact in FACTS:
                http_json(port, "POST", "/v1/memory/knowledge", {"text": fact})
            reference = Reference(ports["llama-server"], port, a.steps, a.max_tokens)
            runs = {
                "tabagent": lambda task: tabagent_run(port, task, a.steps, a.steps * a.max_tokens),
                "reference": reference.run,
            }
            results = []
            for index, (category, task, expected) in enumerate(tasks):
                order = ["tabagent", "reference"] if index % 2 == 0 else ["reference", "tabagent"]
                for side in order:
                    before = notes(port)
                    started = time.monotonic()
                    try:
                        answer, calls = runs[side](task)
                    except Exception as e:  # a failed run is a failed task, and said
                        answer, calls = f"[error: {e}]", 0
                    seconds = time.monotonic() - started
                    ok, written = judged(expected, answer, port, before)
                    for record in written:
                        http_json(port, "DELETE", f"/v1/memory/knowledge/{record}")
                    results.append((category, side, ok, seconds))
                    log(f"{index + 1:2}/{len(tasks)} {side:9} {'ok  ' if ok else 'FAIL'} {seconds:6.1f}s "
                        f"calls={calls} {answer[:90]!r}")
        finally:
            for server in servers.values():
                server.stop()
    print(f"{'category':16} {'tasks':>5} {'tabagent ok':>11} {'ref ok':>7} {'tabagent s':>10} {'ref s':>7} {'time ratio':>10}")
    for category in list(dict.fromkeys(c for c, *_ in results)) + ["all"]:
        rows = [r for r in results if category in ("all", r[0])]
        def side(name):
            mine = [r for r in rows if r[1] == name]
            return sum(r[2] for r in mine), statistics.mean(r[3] for r in mine), len(mine)
        (t_ok, t_s, n), (r_ok, r_s, _) = side("tabagent"), side("reference")
        print(f"{category:16} {n:5} {t_ok:5}/{n:<5} {r_ok:3}/{n:<3} {t_s:10.1f} {r_s:7.1f} {t_s / r_s:10.2f}")


if __name__ == "__main__":
    main()
