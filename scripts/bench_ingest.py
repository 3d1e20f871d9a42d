"""scripts/bench-ingest's measurements: documents from files to searchable, tabagent's librarian
against the Python pipeline people build for it, side by side on the same files, model, passage
size and cores, and how often each finds the page a question's answer is on.

    bench_ingest.py pipeline --model-dir DIR --threads N --out DIR FILE...
        The Python pipeline, one process from start to a saved index: PyMuPDF reads each PDF page's
        text, BeautifulSoup an HTML page's; LangChain's RecursiveCharacterTextSplitter cuts passages
        of 200 tokens of the model's own tokenizer with 30 overlapping (tabagent's librarian
        defaults); sentence-transformers embeds them (all-MiniLM-L6-v2, normalized, batches of
        32); the index is the matrix of vectors (NumPy) saved beside the passages and their pages.

    bench_ingest.py run --tabagent BIN --config TOML --documents DIR --questions JSON ...
        After an untimed warm-up of each on one small file (libraries and model in the page
        cache), alternates the two (tabagent first) --reps times, each on a fresh data directory or
        output folder (the same file twice costs tabagent only a hash): `tabagent ingest` timed
        from process start to exit (model load included), the pipeline likewise; with --uploads,
        also the files POSTed to /v1/documents of a running server. Then recall@5: tabagent through
        POST /v1/memory/search (vector, the pipeline's way, and hybrid, its default), the
        pipeline by cosine over its matrix. Prints one JSON object per measurement, then a table.
"""

import argparse
import http.client
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from bench_common import Server, die, exit_on_signals, free_port, log, tail  # noqa: E402

CHUNK_TOKENS, CHUNK_OVERLAP, TOP_K = 200, 30, 5


# --- the Python pipeline ---------------------------------------------------------------------

def pipeline(args):
    clock = time.perf_counter
    start = clock()
    stages = {}
    import torch
    import numpy as np
    import pymupdf
    from bs4 import BeautifulSoup
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    stages["import_s"] = clock() - start

    mark = clock()
    model = SentenceTransformer(args.model_dir, device="cpu")
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        model.tokenizer, chunk_size=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP)
    stages["model_load_s"] = clock() - mark

    pages = []  # (document, page from 1, text)
    mark = clock()
    for path in map(Path, args.files):
        if path.suffix == ".pdf":
            with pymupdf.open(path) as pdf:
                pages.extend((path.name, number, page.get_text()) for number, page in enumerate(pdf, 1))
        else:
            soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
            pages.append((path.name, 1, soup.get_text("\n")))
    stages["extract_s"] = clock() - mark

    mark = clock()
    passages = [(name, number, piece) for name, number, text in pages
                for piece in splitter.split_text(text) if piece.strip()]
    stages["split_s"] = clock() - mark

    mark = clock()
    vectors = model.encode([p[2] for p in passages], batch_size=32, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    stages["embed_s"] = clock() - mark

    mark = clock()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "vectors.npy", vectors.astype(np.float32))
    with open(out / "passages.json", "w", encoding="utf-8") as f:
        json.dump([{"document": n, "page": p, "text": t} for n, p, t in passages], f)
    stages["save_s"] = clock() - mark
    stages["total_in_process_s"] = clock() - start
    (out / "stages.json").write_text(json.dumps(
        dict(stages, passages=len(passages), pages=len(pages),
             chars=sum(len(t) for _, _, t in pages))))


# --- running and timing ----------------------------------------------------------------------

def timed_process(cmd, stdout_path, stderr_path, env=None):
    """Runs cmd to exit: (seconds from start to exit, exit code, CPU seconds it used: user +
    system, all its threads; what another load on the machine changes least)."""
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        code = subprocess.call(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return seconds, code, cpu


def fresh_data_dir(args, path):
    """A data directory with nothing in it but all-MiniLM-L6-v2, imported as scripts/setup does."""
    shutil.rmtree(path, ignore_errors=True)
    result = subprocess.run([args.tabagent, "--config", args.config, "--data-dir", str(path), "import",
                             args.model_dir, "--name", "all-minilm-l6-v2"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        die(f"tabagent import failed: {result.stderr.strip()}")


def tabagent_cli(args, files, work, rep):
    data = work / f"tabagent-{rep}"
    fresh_data_dir(args, data)
    seconds, code, cpu = timed_process(
        args.pin + [args.tabagent, "--config", args.config, "--data-dir", str(data), "ingest", "--json",
                    *map(str, files)],
        work / f"tabagent-ingest-{rep}.jsonl", work / f"tabagent-ingest-{rep}.log")
    documents = [json.loads(line) for line in open(work / f"tabagent-ingest-{rep}.jsonl") if line.strip()]
    errors = [f"{Path(d.get('path') or d.get('name')).name}: {d['error']}" for d in documents if d.get("error")]
    if code != 0 and not errors:
        errors.append(f"exit code {code}: {tail(work / f'tabagent-ingest-{rep}.log', 5)}")
    return {"peer": "tabagent ingest", "rep": rep, "seconds": seconds, "cpu_seconds": cpu, "exit_code": code,
            "documents": sum(1 for d in documents if d.get("status") == "ready"),
            "pdf_pages": sum(d.get("pages") or 0 for d in documents if d.get("status") == "ready"),
            "passages": sum(d.get("chunks", 0) for d in documents if d.get("status") == "ready"),
            "chars": sum(d.get("chars", 0) for d in documents if d.get("status") == "ready"),
            "warnings": [f"{d['name']}: {w}" for d in documents for w in d.get("warnings", [])],
            "errors": errors, "data_dir": str(data),
            "ids": [d["id"] for d in documents if d.get("status") == "ready"]}


def python_pipeline(args, files, work, rep):
    out = work / f"python-{rep}"
    shutil.rmtree(out, ignore_errors=True)
    seconds, code, cpu = timed_process(
        args.pin + [sys.executable, __file__, "pipeline", "--model-dir", args.model_dir,
                    "--threads", str(args.threads), "--out", str(out), *map(str, files)],
        work / f"python-{rep}.out", work / f"python-{rep}.log", env=python_env())
    if code != 0:
        die(f"the Python pipeline failed (exit {code}):\n{tail(work / f'python-{rep}.log')}")
    stages = json.loads((out / "stages.json").read_text())
    return {"peer": "python pipeline", "rep": rep, "seconds": seconds, "cpu_seconds": cpu, "exit_code": code,
            "passages": stages.pop("passages"), "chars": stages.pop("chars"), "stages": stages, "out": str(out)}


def python_env():
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                TRANSFORMERS_VERBOSITY="error")


def serve(args, data, work, label):
    port = free_port()
    server = Server(label, args.pin + [args.tabagent, "--config", args.config, "--data-dir", str(data), "serve",
                                       "--host", "127.0.0.1", "--port", str(port)],
                    port, "/v1/health/ready", work / f"{label}.log")
    try:
        server.wait_ready(120)
    except RuntimeError as e:
        server.stop()
        die(str(e))
    return server


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def search(port, query, mode):
    status, payload = request(port, "POST", "/v1/memory/search",
                              json.dumps({"query": query, "stores": ["knowledge"], "limit": TOP_K, "mode": mode}),
                              {"content-type": "application/json"})
    if status != 200:
        die(f"POST /v1/memory/search answered {status}: {payload[:500]!r}")
    return json.loads(payload)["data"]


def tabagent_uploads(args, files, work, rep):
    """The server path: each file POSTed to /v1/documents of a running server (its embedding
    model loaded by one search first), from the first request to the last answer."""
    data = work / f"tabagent-http-{rep}"
    fresh_data_dir(args, data)
    server = serve(args, data, work, f"tabagent-uploads-{rep}")
    try:
        search(server.port, "warm up", "vector")
        errors, passages, pdf_pages = [], 0, 0
        start = time.perf_counter()
        for path in files:
            status, payload = request(server.port, "POST", f"/v1/documents?filename={path.name}",
                                      path.read_bytes(), {"content-type": "application/octet-stream"})
            if status not in (200, 201):
                errors.append(f"{path.name}: HTTP {status}: {payload.decode(errors='replace')[:500]}")
                continue
            document = json.loads(payload)
            passages += document.get("chunks", 0)
            pdf_pages += document.get("pages") or 0
        seconds = time.perf_counter() - start
    finally:
        server.stop()
    return {"peer": "tabagent POST /v1/documents", "rep": rep, "seconds": seconds,
            "passages": passages, "pdf_pages": pdf_pages, "errors": errors}


# --- recall ----------------------------------------------------------------------------------

def tabagent_recall(args, data, documents, questions, work, detail):
    """Recall@5 by search mode, and the text of every passage (for their sizes)."""
    server = serve(args, data, work, "tabagent-search")
    try:
        out = {"passages": []}
        for document in documents:
            status, payload = request(server.port, "GET", f"/v1/documents/{document}?passages=true")
            if status != 200:
                die(f"GET /v1/documents/{document} answered {status}: {payload[:500]!r}")
            out["passages"].extend(p["text"] for p in json.loads(payload).get("passages", []))
        for mode in ("vector", "hybrid"):
            search(server.port, "warm up", mode)
            hits, latencies = 0, []
            for q in questions:
                start = time.perf_counter()
                results = search(server.port, q["question"], mode)
                latencies.append((time.perf_counter() - start) * 1e3)
                found = [(s.get("name"), s.get("page")) for r in results for s in r.get("sources", [])]
                hit = (q["document"], q["page"]) in found
                hits += hit
                detail.write(json.dumps({"peer": f"tabagent {mode}", "question": q["question"],
                                         "gold": [q["document"], q["page"]], "hit": hit, "top": found}) + "\n")
            out[mode] = {"recall_at_5": hits / len(questions), "query_ms_p50": statistics.median(latencies)}
        return out
    finally:
        server.stop()


def python_recall(args, out, questions, detail):
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model_dir, device="cpu")
    vectors = np.load(Path(out) / "vectors.npy")
    passages = json.loads((Path(out) / "passages.json").read_text())
    model.encode(["warm up"], normalize_embeddings=True)
    hits, latencies = 0, []
    for q in questions:
        start = time.perf_counter()
        query = model.encode([q["question"]], normalize_embeddings=True, convert_to_numpy=True)[0]
        best = np.argsort(-(vectors @ query))[:TOP_K]
        latencies.append((time.perf_counter() - start) * 1e3)
        found = [(passages[i]["document"], passages[i]["page"]) for i in best]
        hit = (q["document"], q["page"]) in found
        hits += hit
        detail.write(json.dumps({"peer": "python", "question": q["question"], "gold": [q["document"], q["page"]],
                                 "hit": hit, "top": found}) + "\n")
    return {"recall_at_5": hits / len(questions), "query_ms_p50": statistics.median(latencies)}


# --- the run ---------------------------------------------------------------------------------

def run(args):
    exit_on_signals()
    os.environ.update(python_env())  # no progress bars from the recall step's model load
    documents = Path(args.documents)
    files = sorted(p for p in documents.iterdir() if p.suffix in (".pdf", ".html"))
    questions = json.loads(Path(args.questions).read_text())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import pymupdf  # the corpus's own page count
    pdf_pages = 0
    for path in files:
        if path.suffix == ".pdf":
            with pymupdf.open(path) as pdf:
                pdf_pages += len(pdf)
    html = sum(1 for p in files if p.suffix == ".html")
    pages = pdf_pages + html
    args.pin = []
    if args.threads < os.cpu_count():
        args.pin = ["taskset", "-c", f"0-{args.threads - 1}"]

    # Untimed: one small document through each, so that both runs find their libraries and the
    # model in the page cache (the first timed run would otherwise pay for the disk alone).
    log("warming up (untimed)")
    small = min(files, key=lambda p: p.stat().st_size)
    fresh_data_dir(args, work / "warm-up")
    timed_process(args.pin + [args.tabagent, "--config", args.config, "--data-dir", str(work / "warm-up"), "ingest",
                              str(small)],
                  work / "warm-up.out", work / "warm-up-tabagent.log")
    timed_process(args.pin + [sys.executable, __file__, "pipeline", "--model-dir", args.model_dir,
                              "--threads", str(args.threads), "--out", str(work / "warm-up-python"), str(small)],
                  work / "warm-up.out", work / "warm-up-python.log", env=python_env())

    rows = []
    for rep in range(1, args.reps + 1):
        turns = [tabagent_cli] + ([tabagent_uploads] if args.uploads else []) + [python_pipeline]
        for turn in turns:
            row = turn(args, files, work, rep)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("data_dir", "out", "ids")}), flush=True)
            log(f"rep {rep}: {row['peer']} {row['seconds']:.1f} s"
                + (f" ({row['cpu_seconds']:.1f} CPU s)" if "cpu_seconds" in row else "")
                + f", {row['passages']} passages"
                + (f", {len(row['errors'])} error(s)" if row.get("errors") else ""))

    # Each question's top passages, for a look at what was missed.
    with open(work / "recall.jsonl", "w") as detail:
        log("recall@5: tabagent (through /v1/memory/search)")
        last_tabagent = [r for r in rows if r["peer"] == "tabagent ingest"][-1]
        recall_tabagent = tabagent_recall(args, last_tabagent["data_dir"], last_tabagent["ids"], questions, work,
                                          detail)
        log("recall@5: the Python pipeline")
        recall_python = python_recall(args, [r for r in rows if r["peer"] == "python pipeline"][-1]["out"],
                                      questions, detail)
    print(json.dumps({"recall": {"tabagent vector": recall_tabagent["vector"],
                                 "tabagent hybrid": recall_tabagent["hybrid"],
                                 "python": recall_python}, "questions": len(questions)}), flush=True)

    def median(peer, key="seconds"):
        return statistics.median(r[key] for r in rows if r["peer"] == peer)

    def last(peer, key):
        return [r for r in rows if r["peer"] == peer][-1][key]

    print(f"\nDocuments to searchable: {len(files) - html} PDFs ({pdf_pages} pages) + {html} HTML pages = "
          f"{pages} pages; all-MiniLM-L6-v2, passages of {CHUNK_TOKENS} tokens ({CHUNK_OVERLAP} overlap), "
          f"{args.threads} threads; median of {args.reps} run(s) each, alternating; recall@5 over "
          f"{len(questions)} questions (the answer's page among the top {TOP_K} passages)")
    print(f"{'':<46} {'seconds':>8} {'pages/s':>8} {'CPU s':>7} {'passages':>9} {'chars':>8} "
          f"{'recall@5':>9} {'query ms':>9}")
    t, tc = median("tabagent ingest"), median("tabagent ingest", "cpu_seconds")
    print(f"{'tabagent ingest (process start to exit)':<46} {t:>8.1f} {pages / t:>8.2f} {tc:>7.1f} "
          f"{last('tabagent ingest', 'passages'):>9} {last('tabagent ingest', 'chars'):>8}")
    for mode in ("vector", "hybrid"):
        r = recall_tabagent[mode]
        print(f"{'  searched, mode ' + mode:<46} {'':>8} {'':>8} {'':>7} {'':>9} {'':>8} "
              f"{r['recall_at_5']:>9.3f} {r['query_ms_p50']:>9.1f}")
    if args.uploads:
        u = median("tabagent POST /v1/documents")
        print(f"{'tabagent POST /v1/documents (running server)':<46} {u:>8.1f} {pages / u:>8.2f} {'':>7} "
              f"{last('tabagent POST /v1/documents', 'passages'):>9}")
    p, pc = median("python pipeline"), median("python pipeline", "cpu_seconds")
    print(f"{'PyMuPDF + LangChain + sentence-transformers':<46} {p:>8.1f} {pages / p:>8.2f} {pc:>7.1f} "
          f"{last('python pipeline', 'passages'):>9} {last('python pipeline', 'chars'):>8} "
          f"{recall_python['recall_at_5']:>9.3f} {recall_python['query_ms_p50']:>9.1f}")
    print(f"\ntabagent ingest: {p / t:.2f}x the Python pipeline's pages/s, {pc / tc:.2f}x its pages per CPU second")
    # Passage sizes in the model's tokens ([CLS] and [SEP] left out, as LangChain counts them).
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(Path(args.model_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    python_passages = [p["text"] for p in json.loads((Path(last("python pipeline", "out")) / "passages.json").read_text())]
    for name, texts in (("tabagent", recall_tabagent["passages"]), ("Python", python_passages)):
        sizes = [len(e.ids) - 2 for e in tokenizer.encode_batch(texts)]
        print(f"{name} passages: {len(sizes)}, tokens mean {statistics.mean(sizes):.0f}, median "
              f"{statistics.median(sizes):.0f}, max {max(sizes)}, total {sum(sizes)}")
    stages = [r["stages"] for r in rows if r["peer"] == "python pipeline"]
    print("Python pipeline stages (median s): " + ", ".join(
        f"{k.removesuffix('_s')} {statistics.median(s[k] for s in stages):.1f}"
        for k in stages[0] if k.endswith("_s")))
    problems = sorted({e for r in rows for e in r.get("errors", [])})
    warnings = sorted({w for r in rows for w in r.get("warnings", [])})
    if warnings:
        print("\ntabagent warnings:\n  " + "\n  ".join(warnings))
    if problems:
        print("\ntabagent could not read some documents (their pages were not ingested, so its "
              "figures are for less work):\n  " + "\n  ".join(problems))
    if last("tabagent ingest", "pdf_pages") != pdf_pages and not problems:
        print(f"\nnote: tabagent counted {last('tabagent ingest', 'pdf_pages')} PDF pages, PyMuPDF {pdf_pages}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("files", nargs="+")
    r = sub.add_parser("run")
    r.add_argument("--tabagent", required=True)
    r.add_argument("--config", required=True)
    r.add_argument("--model-dir", required=True)
    r.add_argument("--documents", required=True)
    r.add_argument("--questions", required=True)
    r.add_argument("--work", required=True, help="data directories, outputs and logs")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--reps", type=int, default=2)
    r.add_argument("--uploads", action="store_true")
    args = parser.parse_args()
    pipeline(args) if args.command == "pipeline" else run(args)


if __name__ == "__main__":
    main()
