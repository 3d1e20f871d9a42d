"""The peers of scripts/bench-embed, side by side in one run on the same texts and cores:
sentence-transformers (PyTorch CPU), onnxruntime from Python on the same ONNX graphs tabagent
runs, and tabagent itself over HTTP. tabagent's in-process figures come from `tabagent bench`
(run by the shell script) and are passed in as JSON.

Prints one JSON object per measurement, then a table with the ratios.
"""

import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse


def timed(fn, reps):
    fn()  # warm-up
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(name, embed, texts, batch, reps):
    """batch-1 latency (median over single texts) and batch throughput (median over reps)."""
    big = (texts * (batch // len(texts) + 1))[:batch]
    embed(big)
    embed(texts[:1])
    latencies, throughputs = [], []
    for _ in range(reps):
        for text in texts[:32]:
            start = time.perf_counter()
            embed([text])
            latencies.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        embed(big)
        throughputs.append(batch / (time.perf_counter() - start))
    return {"peer": name, "latency_ms_p50": statistics.median(latencies),
            "inputs_per_s": statistics.median(throughputs)}


def sentence_transformers_peer(model_dir, threads):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    return lambda texts: model.encode(texts, batch_size=len(texts), normalize_embeddings=False)


def onnxruntime_peer(onnx_path, tokenizer_path, threads):
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_path)
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    wants_types = any(i.name == "token_type_ids" for i in session.get_inputs())

    def embed(texts):
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if wants_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        states = session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return embed


def http_peer(url, model):
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port)

    def embed(texts):
        body = json.dumps({"model": model, "input": texts})
        connection.request("POST", "/v1/embeddings", body, {"content-type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(payload)
        return payload

    return embed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", action="append", required=True,
                        help="NAME=FILE: texts, one per line; measured separately")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--float-onnx", required=True)
    parser.add_argument("--int8-onnx", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--inprocess", action="append", required=True,
                        help="NAME=FILE: JSON lines from `tabagent bench` on that corpus")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tokenizer = args.model_dir + "/tokenizer.json"
    peers = [
        ("sentence-transformers (torch)", sentence_transformers_peer(args.model_dir, args.threads)),
        ("onnxruntime-python float", onnxruntime_peer(args.float_onnx, tokenizer, args.threads)),
        ("onnxruntime-python int8", onnxruntime_peer(args.int8_onnx, tokenizer, args.threads)),
        ("tabagent http float", http_peer(args.server, "minilm")),
        ("tabagent http int8", http_peer(args.server, "minilm-int8")),
    ]
    inprocess = dict(item.split("=", 1) for item in args.inprocess)
    for corpus in args.corpus:
        name, path = corpus.split("=", 1)
        with open(path, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
        results = [measure(peer, embed, texts, args.batch, args.reps) for peer, embed in peers]
        with open(inprocess[name], encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                results.append({"peer": "tabagent in-process " + record["label"],
                                "latency_ms_p50": record["latency_ms_p50"],
                                "inputs_per_s": record["inputs_per_s"]})
        for r in results:
            print(json.dumps(dict(r, corpus=name)))
        base = results[0]
        print(f"\ncorpus {name}: {len(texts)} texts")
        print(f"{'peer':<34} {'batch-1 ms':>10} {'x ST':>6} {'batch-' + str(args.batch) + '/s':>11} {'x ST':>6}")
        for r in results:
            print(f"{r['peer']:<34} {r['latency_ms_p50']:>10.2f} {r['latency_ms_p50'] / base['latency_ms_p50']:>6.2f}"
                  f" {r['inputs_per_s']:>11.1f} {r['inputs_per_s'] / base['inputs_per_s']:>6.2f}")
        print()


if __name__ == "__main__":
    sys.exit(main())
