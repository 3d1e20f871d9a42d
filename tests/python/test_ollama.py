"""Ollama's API through the official `ollama` Python client, against a real tabagent serving real
models (SmolLM2 and Qwen2.5-Coder in process, MiniLM for embeddings)."""
import json
import math
import os
import re
import tempfile
import urllib.error
import urllib.request

import jsonschema
import ollama
import pytest

from conftest import EMBEDDING_MODEL, MODEL, TOOLS_MODEL, serving
from test_hub_interop import REPO, env_for, hub  # noqa: F401 (a fixture)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def client(server_url):
    return ollama.Client(host=server_url)


def test_version_and_tags_list_the_models(client):
    assert re.fullmatch(r"\d+\.\d+\.\d+", client._request_raw("GET", "/api/version").json()["version"])
    models = {m.model: m for m in client.list().models}
    assert {MODEL, TOOLS_MODEL, EMBEDDING_MODEL} <= set(models)
    assert models[MODEL].details.format == "gguf"
    assert models[EMBEDDING_MODEL].details.format == "onnx"
    assert models[MODEL].size == os.path.getsize(os.environ["TABAGENT_TEST_SMOLLM2_GGUF"])
    assert re.fullmatch(r"[0-9a-f]{64}", models[MODEL].digest)


def test_chat_streamed_adds_up_to_the_whole_answer(client):
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat(model=MODEL, messages=messages, options=GREEDY)
    assert whole.done and whole.done_reason == "length"
    assert whole.eval_count == 12 and whole.prompt_eval_count > 5
    # The engine's own times; the total holds both.
    assert 0 < whole.prompt_eval_duration + whole.eval_duration <= whole.total_duration
    assert whole.message.role == "assistant" and whole.message.content
    parts = list(client.chat(model=f"{MODEL}:latest", messages=messages, options=GREEDY, stream=True))
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == 12 and parts[-1].total_duration > 0


def test_generate_uses_the_template_unless_raw(client):
    templated = client.generate(model=MODEL, prompt="Say hello.", system="You are terse.",
                                options=GREEDY)
    raw = client.generate(model=MODEL, prompt="Say hello.", raw=True, options=GREEDY)
    assert templated.response and raw.response
    # The template wraps the prompt in the system and user turns: more prompt tokens.
    assert templated.prompt_eval_count > raw.prompt_eval_count + 5
    streamed = "".join(p.response for p in client.generate(
        model=MODEL, prompt="Say hello.", system="You are terse.", options=GREEDY, stream=True))
    assert streamed == templated.response


def test_format_holds_the_answer_to_a_schema(client):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    reply = client.chat(model=MODEL, format=schema, options={"temperature": 0, "num_predict": 64},
                        messages=[{"role": "user", "content": "Invent a person."}])
    jsonschema.validate(json.loads(reply.message.content), schema)
    # The 135M model loops inside JSON; the 0.5B coder closes its object.
    reply = client.generate(model=TOOLS_MODEL, prompt="Describe a cat in JSON.", format="json",
                            options={"temperature": 0, "num_predict": 256})
    assert reply.done_reason == "stop", reply.response
    assert isinstance(json.loads(reply.response), dict)


def test_tools_are_called_and_the_result_goes_back(client):
    messages = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    first = client.chat(model=TOOLS_MODEL, messages=messages, tools=[WEATHER],
                        options={"temperature": 0})
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris"}
    streamed = list(client.chat(model=TOOLS_MODEL, messages=messages, tools=[WEATHER],
                                options={"temperature": 0}, stream=True))
    calls = [c for p in streamed for c in (p.message.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    messages.append(first.message)
    messages.append({"role": "tool", "tool_name": "get_weather",
                     "content": json.dumps({"temperature": 31, "unit": "celsius"})})
    # Without the tools, the 0.5B model answers from the result instead of calling again.
    second = client.chat(model=TOOLS_MODEL, messages=messages, options={"temperature": 0, "num_predict": 48})
    assert second.message.content.strip() and not second.message.tool_calls
    # The call and its result were in the prompt.
    question_only = client.chat(model=TOOLS_MODEL, messages=messages[:1], options={"num_predict": 1})
    assert second.prompt_eval_count > question_only.prompt_eval_count + 20


def test_embed_gives_unit_vectors_and_embeddings_the_raw_one(client):
    reply = client.embed(model=EMBEDDING_MODEL, input=["a cat", "a dog"])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 384
    for vector in reply.embeddings:
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-4)
    assert reply.prompt_eval_count > 2
    old = client.embeddings(model=EMBEDDING_MODEL, prompt="a cat")
    cosine = math.fsum(a * b for a, b in zip(old.embedding, reply.embeddings[0])) / math.sqrt(
        math.fsum(a * a for a in old.embedding))
    assert cosine > 0.9999
    cut = client.embed(model=EMBEDDING_MODEL, input="a cat", dimensions=64)
    assert len(cut.embeddings[0]) == 64


def test_show_and_ps_describe_the_models(client):
    qwen = client.show(TOOLS_MODEL)
    assert "tools" in qwen.capabilities and "completion" in qwen.capabilities
    assert "<tool_call>" in qwen.template
    assert qwen.modelinfo["general.architecture"] == "qwen2"
    assert qwen.modelinfo["qwen2.context_length"] == 32768
    assert qwen.details.quantization_level == "Q4_K_M"
    assert client.show(EMBEDDING_MODEL).capabilities == ["embedding"]
    client.generate(model=MODEL, prompt="", keep_alive="10m")
    running = {m.model: m for m in client.ps().models}
    assert MODEL in running and running[MODEL].size > 0 and running[MODEL].expires_at is not None
    client.generate(model=TOOLS_MODEL, prompt="", keep_alive=0)
    assert TOOLS_MODEL not in {m.model for m in client.ps().models}


def test_mistakes_are_clear_errors(client, server_url):
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                    options={"temperature": 9})
    assert bad.value.status_code == 400 and "temperature" in bad.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model=MODEL, messages=[{"role": "wizard", "content": "Hi"}])
    assert unknown.value.status_code == 400 and "wizard" in unknown.value.error
    # A body that is not JSON gets Ollama's error shape too.
    broken = urllib.request.Request(server_url + "/api/chat", data=b'{"model": ', method="POST",
                                    headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(broken)
    assert refused.value.code == 400
    assert "not valid JSON" in json.load(refused.value)["error"]


@pytest.fixture()
def hub_server(hub):
    """A tabagent whose Hub is the stand-in, with an empty cache."""
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as data:
        env = dict(env_for(hub, cache, data), TABAGENT_MODELS__PRELOAD="false")
        with serving([], env) as url:
            yield url


def test_pull_reports_progress_then_the_model_serves_and_deletes(hub_server):
    client = ollama.Client(host=hub_server)
    name = f"{REPO}:Q4_1"
    progress = list(client.pull(name, stream=True))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    sizes = [p.completed for p in progress if p.total]
    assert sizes and sizes == sorted(sizes) and sizes[-1] == os.path.getsize(os.environ["TABAGENT_TEST_SMOLLM2_GGUF"])
    assert name in {m.model for m in client.list().models}
    reply = client.chat(model=name, messages=[{"role": "user", "content": "Hi"}], options=GREEDY)
    assert reply.message.content
    client.generate(model=name, prompt="", keep_alive=0)
    client.delete(name)
    assert name not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as gone:
        client.delete(name)
    assert gone.value.status_code == 404
