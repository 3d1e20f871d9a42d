"""Helpers for scripts/bench-memory: the corpus (Debian package descriptions and standard-library
docstring paragraphs), its embeddings, exact neighbours, hnswlib.

    corpus OUT_TEXTS OUT_QUERIES N Q      Debian package descriptions (apt-cache dumpavail)
    embed URL TEXTS OUT                   vectors from tabagent's /v1/embeddings (f32, n x 384)
    truth VECTORS QUERIES OUT             exact top-10 by cosine (u32 ids)
    hnswlib VECTORS QUERIES TRUTH EFS     build and query hnswlib single-threaded: JSON lines
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


def hnsw(vectors, queries, truth_path, efs):
    import hnswlib
    v, q = load(vectors), load(queries)
    t = np.fromfile(truth_path, dtype="<u4").reshape(-1, 10)
    index = hnswlib.Index(space="cosine", dim=DIM)
    started = time.perf_counter()
    index.init_index(max_elements=len(v), M=16, ef_construction=128)
    index.set_num_threads(1)
    for start in range(0, len(v), 1000):
        index.add_items(v[start:start + 1000], np.arange(start, min(start + 1000, len(v))))
    print(json.dumps({"test": "ann_build", "vectors": len(v), "seconds": time.perf_counter() - started}))
    for ef in efs:
        index.set_ef(ef)
        index.knn_query(q[:1], k=10)
        hits, started = 0, time.perf_counter()
        for i in range(len(q)):
            labels, _ = index.knn_query(q[i:i + 1], k=10)
            hits += len(set(labels[0].tolist()) & set(t[i].tolist()))
        seconds = time.perf_counter() - started
        print(json.dumps({"test": "ann_index", "ef": ef, "recall_at_10": hits / (len(q) * 10), "qps": len(q) / seconds}))


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
