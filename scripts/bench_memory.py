"""Helpers for scripts/bench-memory: the corpus (Debian package descriptions and standard-library
docstring paragraphs), its embeddings, exact neighbours, hnswlib.

    corpus OUT_TEXTS OUT_QUERIES N Q      Debian package descriptions (apt-cache dumpavail)
    embed URL TEXTS OUT                   vectors from tabagent's /v1/embeddings (f32, n x 384)
    truth VECTORS QUERIES OUT             exact top-10 by cosine (u32 ids)
    hnswlib VECTORS QUERIES TRUTH EFS     build and query hnswlib single-threaded: JSON lines
    interleave VECTORS QUERIES TRUTH EFS ROUNDS BENCH...
                                          hnswlib and BENCH (memory_bench ann ...) side by side,
                                          their passes alternating, the best of ROUNDS each
"""
import json, subprocess, sys, time, urllib.request

import numpy as np

DIM = 384


def corpus(out_texts, out_queries, n, q):
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    # Each package's short description, and each paragraph of its long one, is a chunk.
    seen, texts = set(), []
    for block in dump.split("\n\n"):
        lines = block.split("\n")
        for i, line in enumerate(lines):
            if line.startswith(("Description:", "Description-en:")):
                chunks, paragraph = [line.split(":", 1)[1].strip()], []
                for cont in lines[i + 1:]:
                    if not cont.startswith(" "):
                        break
                    if cont.strip() == ".":
                        chunks.append(" ".join(paragraph))
                        paragraph = []
                    else:
                        paragraph.append(cont.strip())
                chunks.append(" ".join(paragraph))
                for chunk in chunks:
                    chunk = " ".join(chunk.split())
                    if len(chunk.split()) >= 4 and chunk not in seen:
                        seen.add(chunk)
                        texts.append(chunk)
                break
    # Not enough packages for 100k: add the paragraphs of the Python standard library's
    # docstrings, up to 80 words each.
    import ast, pathlib, sysconfig
    for path in sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for paragraph in (ast.get_docstring(node) or "").split("\n\n"):
                    words = paragraph.split()
                    chunk = " ".join(words[:80])
                    if len(words) >= 4 and chunk not in seen:
                        seen.add(chunk)
                        texts.append(chunk)
    if len(texts) < n + q:
        sys.exit(f"only {len(texts)} distinct descriptions; need {n + q}")
    rng = np.random.default_rng(7)
    order = rng.permutation(len(texts))
    with open(out_texts, "w") as f:
        f.writelines(texts[i] + "\n" for i in order[:n])
    with open(out_queries, "w") as f:
        f.writelines(texts[i] + "\n" for i in order[n:n + q])


def embed(url, texts_path, out):
    texts = open(texts_path).read().splitlines()
    with open(out, "wb") as f:
        for start in range(0, len(texts), 256):
            body = json.dumps({"model": "minilm", "input": texts[start:start + 256]}).encode()
            req = urllib.request.Request(url + "/v1/embeddings", body, {"Content-Type": "application/json"})
            data = json.load(urllib.request.urlopen(req, timeout=600))["data"]
            f.write(np.asarray([d["embedding"] for d in data], dtype="<f4").tobytes())
            if start % 10240 == 0:
                print(f"embedded {start + len(data)} / {len(texts)}", file=sys.stderr, flush=True)


def load(path):
    return np.fromfile(path, dtype="<f4").reshape(-1, DIM)


def truth(vectors, queries, out):
    v, q = load(vectors), load(queries)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    top = np.argsort(-(q @ v.T), axis=1)[:, :10]
    top.astype("<u4").tofile(out)


def hnswlib_index(v):
    """hnswlib's index over `v` (cosine, M = 16, ef_construction = 128, one thread), built in
    batches of 1,000 as tabagent commits them; and the build time."""
    import hnswlib
    index = hnswlib.Index(space="cosine", dim=DIM)
    started = time.perf_counter()
    index.init_index(max_elements=len(v), M=16, ef_construction=128)
    index.set_num_threads(1)
    for start in range(0, len(v), 1000):
        index.add_items(v[start:start + 1000], np.arange(start, min(start + 1000, len(v))))
    return index, time.perf_counter() - started


def hnswlib_pass(index, q, t, ef):
    """One timed pass over the queries, one at a time: (queries/s, recall@10)."""
    index.set_ef(ef)
    hits, started = 0, time.perf_counter()
    for i in range(len(q)):
        labels, _ = index.knn_query(q[i:i + 1], k=10)
        hits += len(set(labels[0].tolist()) & set(t[i].tolist()))
    return len(q) / (time.perf_counter() - started), hits / (len(q) * 10)


def hnsw(vectors, queries, truth_path, efs, passes=3):
    v, q = load(vectors), load(queries)
    t = np.fromfile(truth_path, dtype="<u4").reshape(-1, 10)
    index, seconds = hnswlib_index(v)
    print(json.dumps({"test": "ann_build", "vectors": len(v), "seconds": seconds}))
    for ef in efs:
        runs = [hnswlib_pass(index, q, t, ef) for _ in range(passes)]
        print(json.dumps({"test": "ann_index", "ef": ef, "recall_at_10": runs[0][1], "qps": max(r[0] for r in runs)}))


def interleave(vectors, queries, truth_path, efs, rounds, bench):
    """hnswlib here and tabagent's memory_bench (`bench`, in its serve mode) side by side: each
    round runs one pass of each at every ef, alternating, so both see the same machine; each
    keeps its best pass. JSON lines, each naming its peer."""
    import os
    v, q = load(vectors), load(queries)
    t = np.fromfile(truth_path, dtype="<u4").reshape(-1, 10)
    index, seconds = hnswlib_index(v)
    print(json.dumps({"peer": "hnswlib", "test": "ann_build", "vectors": len(v), "seconds": seconds}), flush=True)
    env = dict(os.environ, TABAGENT_BENCH_SERVE="1")
    child = subprocess.Popen(bench, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    built = json.loads(child.stdout.readline())
    print(json.dumps({"peer": "tabagent", **built}), flush=True)

    def ask(what, ef):
        child.stdin.write(f"{what} {ef}\n")
        child.stdin.flush()
        r = json.loads(child.stdout.readline())
        return r["qps"], r["recall_at_10"]

    best = {}
    def keep(key, run):
        if key not in best or run[0] > best[key][0]:
            best[key] = run
    for _ in range(rounds):
        for ef in efs:
            keep(("hnswlib", "ann_index", ef), hnswlib_pass(index, q, t, ef))
            keep(("tabagent", "ann_index", ef), ask("index", ef))
            keep(("tabagent", "ann_search_with_records", ef), ask("records", ef))
    child.stdin.close()
    if child.wait() != 0:
        sys.exit(f"memory_bench exited with {child.returncode}")
    for (peer, test, ef), (qps, recall) in best.items():
        print(json.dumps({"peer": peer, "test": test, "ef": ef, "recall_at_10": recall, "qps": qps,
                          "rounds": rounds}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "corpus":
        corpus(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "embed":
        embed(*args)
    elif cmd == "truth":
        truth(*args)
    elif cmd == "hnswlib":
        hnsw(args[0], args[1], args[2], [int(e) for e in args[3].split(",")])
    elif cmd == "interleave":
        interleave(args[0], args[1], args[2], [int(e) for e in args[3].split(",")], int(args[4]), args[5:])
