"""Starts a real `tabagent serve` on a free loopback port with the real SmolLM2 model (and
Qwen2.5-Coder for tool calling)."""
import contextlib
import os
import re
import subprocess
import tempfile

import pytest

MODEL = "smollm2"
# A model whose template calls tools.
TOOLS_MODEL = "qwen"
EMBEDDING_MODEL = "minilm"


@contextlib.contextmanager
def serving(args, env):
    """`tabagent serve` on a free port with `args` and `env`: its URL while the block runs."""
    proc = subprocess.Popen([os.environ["TABAGENT_BIN"], "serve", "--port", "0", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for line in proc.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "server exited before it listened"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def server_url():
    binary = os.environ["TABAGENT_BIN"]
    gguf = os.environ["TABAGENT_TEST_SMOLLM2_GGUF"]
    with tempfile.TemporaryDirectory() as data_dir:
        env = dict(os.environ, TABAGENT_DATA_DIR=data_dir,
                   TABAGENT_MODELS__DIRECTORIES__MINILM=os.environ["TABAGENT_TEST_MINILM_DIR"],
                   TABAGENT_ONNX__RUNTIME_LIBRARY=os.environ["TABAGENT_TEST_ORT_LIB"],
                   # The ML worker from the environment the Rust tests made.
                   TABAGENT_WORKER__DIR=os.environ["TABAGENT_TEST_WORKER_DIR"],
                   TABAGENT_MODELS__DIRECTORIES__WHISPER=os.environ["TABAGENT_TEST_WHISPER_DIR"],
                   TABAGENT_WORKER__SPEECH_MODEL="whisper")
        subprocess.run([binary, "import", gguf, "--name", MODEL], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run([binary, "import", os.environ["TABAGENT_TEST_QWEN_GGUF"], "--name", TOOLS_MODEL],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        with serving(["--model", MODEL, "--parallel", "2"], env) as url:
            yield url
