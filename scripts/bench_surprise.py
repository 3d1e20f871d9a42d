"""Surprise gating measured on planted facts (scripts/lib/surprise_conversations.json): each turn
is sent as a chat request naming its conversation, as a user would; the server scores it in the
background, and this waits for its decision (the `tabagent_memory_surprise_total` counters of
/metrics) before the next turn. Then the records kept are matched to the turns, and the shares
printed: novel facts and updates kept, repeats and questions dropped."""
import argparse, json, re, sys, time, urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from bench_common import Server, exit_on_signals, free_port, log  # noqa: E402


def call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        raw = response.read().decode()
    return json.loads(raw) if raw.startswith(("{", "[")) else raw


def decisions(base):
    text = call(base + "/metrics")
    counts = Counter()
    for name, decision, value in re.findall(r'^(tabagent_memory_surprise_total)\{decision="(\w+)"\} (\S+)$', text, re.M):
        counts[decision] = int(float(value))
    return counts


def main():
    exit_on_signals()
    parser = argparse.ArgumentParser()
    parser.add_argument("--tabagent", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--conversations", required=True)
    args = parser.parse_args()
    planted = json.loads(Path(args.conversations).read_text())["conversations"]
    port = free_port()
    server = Server("tabagent", [args.tabagent, "serve", "--port", str(port), "--model", args.model,
                                 "--data-dir", args.data_dir], port, "/v1/health",
                    str(Path(args.data_dir) / "server.log"))
    base = f"http://127.0.0.1:{port}"
    outcomes = []
    try:
        server.wait_ready(120)
        started = time.monotonic()
        for conversation in planted:
            for label, text in conversation["turns"]:
                before = sum(decisions(base).values())
                call(base + "/v1/chat/completions", {
                    "model": args.model, "conversation_id": conversation["id"], "max_tokens": 16,
                    "temperature": 0, "messages": [{"role": "user", "content": text}]})
                while sum(decisions(base).values()) == before:
                    time.sleep(0.05)
                outcomes.append((label, (conversation["id"], text)))
        elapsed = time.monotonic() - started
        kept = call(base + "/v1/memory/knowledge?kind=remembered&limit=200")["data"]
        # By conversation too: a repeat word for word has the text of the fact it repeats.
        kept_texts = {(record["conversation"], record["text"]) for record in kept}
        counts = decisions(base)
    finally:
        server.stop()
    table = Counter()
    for label, text in outcomes:
        table[(label, text in kept_texts)] += 1
    print(f"{'turns':<10} {'said':>5} {'kept':>5} {'dropped':>8}")
    for label in ["novel", "update", "repeat", "question"]:
        said = table[(label, True)] + table[(label, False)]
        print(f"{label:<10} {said:>5} {table[(label, True)]:>5} {table[(label, False)]:>8}")
    def share(label, kept):
        said = table[(label, True)] + table[(label, False)]
        return f"{table[(label, kept)]}/{said}"
    print(f"\nnovel facts kept: {share('novel', True)}   repeats dropped: {share('repeat', False)}   "
          f"updates kept: {share('update', True)}   questions dropped: {share('question', False)}")
    print(f"gate decisions (/metrics): {dict(counts)}; {len(outcomes)} turns in {elapsed:.0f} s "
          f"(chat answer and scoring, {args.model})", flush=True)
    missed = [(l, t) for l, t in outcomes if (l in ("novel", "update")) != (t in kept_texts)]
    for label, (_, text) in missed:
        log(f"  wrong: {label}: {text}")


if __name__ == "__main__":
    main()
