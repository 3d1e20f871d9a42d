"""Writes reference sentence embeddings with the real sentence-transformers library.

Run through scripts/golden-embeddings, which installs the pinned reference stack. The output is
committed; the Rust tests compare tabagent's vectors with it (cosine >= 0.999 per sentence).
"""

import json
import os
import sys

from sentence_transformers import SentenceTransformer
import sentence_transformers
import torch

LONG = " ".join(
    "Section {n}: the quick brown fox jumps over the lazy dog while the committee reviews the budget.".format(n=n)
    for n in range(40)
)

SENTENCES = [
    "hello world",
    "The cat sits on the mat.",
    "A man is playing a guitar on stage in front of a large crowd.",
    "How do I reset my password if I no longer have access to my email?",
    "Quantum entanglement links the states of two particles regardless of distance.",
    "I love this product! Best purchase I've made all year. 10/10",
    "Die Katze schläft auf dem Sofa.",
    "Le café est très chaud ce matin.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "naïve café résumé façade coöperate",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT name, price FROM products WHERE price > 100 ORDER BY price DESC;",
    "https://example.com/path?query=embedding&lang=en#section-2",
    "🚀🔥 launching today!! 🎉",
    "THE MEETING HAS BEEN MOVED TO 3 PM TOMORROW.",
    "a",
    "   leading and trailing spaces   ",
    "Line one.\nLine two.\n\nLine four after a blank line.",
    "The price rose 3.5% to $1,234.56 on 2024-03-15.",
    "<p>Some <b>HTML</b> markup &amp; entities</p>",
    "word word word word word word word word word word",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The defendant pleaded not guilty to all charges.",
    LONG,
]


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(SENTENCES, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    tokens = [len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"]) for s in SENTENCES]
    record = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "produced_by": {
            "script": "scripts/golden-embeddings",
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
        "max_seq_length": model.max_seq_length,
        "cases": [
            {"text": s, "tokens": n, "embedding": [round(float(x), 7) for x in v]}
            for s, n, v in zip(SENTENCES, tokens, vectors)
        ],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(SENTENCES)} reference vectors to {out}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
