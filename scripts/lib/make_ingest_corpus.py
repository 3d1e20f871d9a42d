"""Makes the corpus of scripts/bench-ingest from the Python 3.11 documentation as Debian ships
it (python3.11-doc): the pages scripts/lib/ingest_questions.json names, printed to PDF by
headless Chromium (what people print web pages with), and a few kept as HTML. Then each
question's answer phrase is looked up in the PDFs' page texts (PyMuPDF, whitespace collapsed): it
must be on exactly one page of them all, in its own document: the question's gold page. Writes
OUT/documents/ and OUT/questions.json (the questions with their pages). Run with the reference
venv's Python:

    make_ingest_corpus.py HTML_ROOT QUESTIONS_JSON OUT
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pymupdf  # PyMuPDF


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def print_pdf(html: Path, pdf: Path):
    # The same call scripts/make-document-fixtures makes; Chromium writes the file or says why not.
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
         f"--print-to-pdf={pdf}", html.as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=180)
    if result.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        sys.exit(f"chromium could not print {html}: {result.stderr[-2000:]}")


def main(html_root: str, questions_json: str, out: str):
    spec = json.loads(Path(questions_json).read_text())
    root, out = Path(html_root), Path(out)
    documents = out / "documents"
    documents.mkdir(parents=True, exist_ok=True)
    pages = {}  # PDF name -> [squashed page text]
    for page in spec["pdf"]:
        name = page.replace("/", "-").removesuffix(".html") + ".pdf"
        print_pdf(root / page, documents / name)
        with pymupdf.open(documents / name) as pdf:
            pages[name] = [squash(p.get_text()) for p in pdf]
    for page in spec["html"]:
        shutil.copyfile(root / page, documents / page.replace("/", "-"))

    resolved, problems = [], []
    for q in spec["questions"]:
        phrase = squash(q["answer"])
        found = [(name, i + 1) for name, texts in pages.items()
                 for i, text in enumerate(texts) if phrase in text]
        if len(found) != 1 or found[0][0] != q["document"]:
            where = ", ".join(f"{name} p. {page}" for name, page in found) or "no page"
            problems.append(f"{phrase!r} ({q['document']}) is on {where}, not on one page of its PDF")
            continue
        resolved.append({**q, "page": found[0][1]})
    if problems:
        sys.exit("questions without one gold page (fix scripts/lib/ingest_questions.json):\n  "
                 + "\n  ".join(problems))
    (out / "questions.json").write_text(json.dumps(resolved, indent=1) + "\n")
    total = sum(len(t) for t in pages.values()) + len(spec["html"])
    print(f"{len(pages)} PDFs ({total - len(spec['html'])} pages), {len(spec['html'])} HTML pages, "
          f"{len(resolved)} questions", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
