"""Agent runs behind `POST /v1/responses` through the official OpenAI SDK: the server runs the
tools the model calls (`mcp_call` items), over the real Qwen2.5-Coder, a real workspace folder,
the real bubblewrap sandbox and the real memory with MiniLM embeddings."""
import json
import os
import re
import subprocess
import tempfile

import openai
import pytest
import httpx as requests

from conftest import TOOLS_MODEL, EMBEDDING_MODEL, serving

CODE = "HERON-42"
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


@pytest.fixture(scope="module")
def agent_server():
    binary = os.environ["TABAGENT_BIN"]
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryDirectory() as workspace:
        with open(os.path.join(workspace, "notes.txt"), "w") as notes:
            notes.write(f"The access code for the lab is {CODE}.\n")
        env = dict(os.environ, TABAGENT_DATA_DIR=data_dir,
                   TABAGENT_MODELS__DIRECTORIES__MINILM=os.environ["TABAGENT_TEST_MINILM_DIR"],
                   TABAGENT_ONNX__RUNTIME_LIBRARY=os.environ["TABAGENT_TEST_ORT_LIB"],
                   TABAGENT_MEMORY__EMBEDDING_MODEL=EMBEDDING_MODEL,
                   TABAGENT_WORKER__MODE="off",
                   TABAGENT_AGENT__ALLOW_CODE="true",
                   TABAGENT_AGENT__WORKSPACES__DOCS=workspace)
        subprocess.run([binary, "import", os.environ["TABAGENT_TEST_QWEN_GGUF"], "--name", TOOLS_MODEL],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        with serving(["--model", TOOLS_MODEL], env) as url:
            yield url


@pytest.fixture(scope="module")
def client(agent_server):
    return openai.OpenAI(base_url=agent_server + "/v1", api_key="unused-on-loopback", max_retries=0)


def run(client, task, tools, **extra):
    return client.responses.create(model=TOOLS_MODEL, input=task, tools=tools, temperature=0, **extra)


def only(*names, recall=False):
    """The server's tools `names`, without past runs recalled (so that one test's runs do not
    change what the model does in the next)."""
    return {"type": "tabagent", "allowed_tools": list(names), "recall": recall}


def server_calls(response, name=None):
    return [item for item in response.output
            if item.type == "mcp_call" and (name is None or item.name == name)]


def digits(text):
    return re.sub(r"[,\s]", "", text)


def test_the_model_calls_the_calculator_and_answers_with_its_result(client):
    response = run(client, "What is 1234 * 5678? Use the calculator.",
                   [only("calculator")])
    calls = server_calls(response, "calculator")
    assert calls and calls[0].server_label == "tabagent" and calls[0].error is None
    assert "7006652" in calls[0].output
    assert "7006652" in digits(response.output_text)
    assert response.status == "completed"
    # Only the calculator was offered: nothing else ran.
    assert {c.name for c in server_calls(response)} == {"calculator"}


def test_a_file_in_a_workspace_folder_reaches_the_answer(client):
    response = run(client, "Read notes.txt in the docs workspace and tell me the lab access code.",
                   [only("list_files", "read_file")])
    (read, *_) = server_calls(response, "read_file")
    assert CODE in read.output
    assert CODE in response.output_text


def test_code_interpreter_runs_python_in_the_sandbox(client):
    response = run(client, "Use run_code to compute the sum of the squares of the numbers 1 to 100 with Python.",
                   [{"type": "code_interpreter", "container": {"type": "auto"}}])
    outputs = [c.output or "" for c in server_calls(response, "run_code")]
    assert any("338350" in o for o in outputs), outputs


def test_memory_search_finds_what_was_written(client, agent_server):
    written = requests.post(agent_server + "/v1/memory/knowledge",
                            json={"text": "The Zephyr project has a budget of 1200 euros."})
    assert written.status_code == 201
    response = run(client, "Search the memory for the Zephyr project budget.",
                   [only("memory_search")])
    (search, *_) = server_calls(response, "memory_search")
    assert "1200 euros" in search.output


def test_the_run_is_recorded_and_recalled_for_a_similar_task(client, agent_server):
    task = "Use the calculator: what is 4321 * 1111?"
    tools = [only("calculator", recall=True)]
    first = client.responses.with_raw_response.create(model=TOOLS_MODEL, input=task, tools=tools,
                                                      temperature=0)
    response = first.parse()
    runs = requests.get(agent_server + "/v1/memory/experience", params={"limit": 100}).json()["data"]
    (record,) = [r for r in runs if r["kind"] == "agent_run" and r["data"]["response_id"] == response.id]
    assert record["kind"] == "agent_run" and record["text"] == task
    assert record["data"]["end"] == "answered" and record["data"]["model"] == TOOLS_MODEL
    assert [c["name"] for c in record["data"]["calls"]] == [c.name for c in server_calls(response)]
    results = requests.get(agent_server + "/v1/memory/tool-results", params={"limit": 100}).json()["data"]
    mine = [r for r in results if r["conversation"] == response.id]
    assert len(mine) == len(server_calls(response)) and "4800631" in mine[0]["data"]["output"]
    again = client.responses.with_raw_response.create(model=TOOLS_MODEL, input=task, tools=tools,
                                                      temperature=0)
    # The run just recorded is among those recalled now.
    assert int(again.headers["x-tabagent-recalled-runs"]) >= 1
    without = client.responses.with_raw_response.create(model=TOOLS_MODEL, input=task, temperature=0,
                                                        tools=[only("calculator")])
    assert without.headers["x-tabagent-recalled-runs"] == "0"


def test_a_streamed_run_reports_each_call_and_adds_up_to_the_stored_response(client):
    events = list(client.responses.create(model=TOOLS_MODEL, input="What is 1234 * 5678? Use the calculator.",
                                          tools=[only("calculator")],
                                          temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for kind in ["response.mcp_call.in_progress", "response.mcp_call_arguments.done",
                 "response.mcp_call.completed"]:
        assert kind in kinds, kind
    # Each call's item is announced, then done with its output.
    done = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "mcp_call"]
    assert done and "7006652" in done[0].output
    final = events[-1].response
    assert [i.id for i in final.output] == [e.item.id for e in events if e.type == "response.output_item.done"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "7006652" in digits(text)
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_a_call_of_the_clients_own_tool_ends_the_run_for_the_client_to_answer(client):
    tools = [WEATHER, only("calculator")]
    first = run(client, "What is the weather in Paris right now?", tools)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] == "Paris"
    answer = run(client, [{"type": "function_call_output", "call_id": call.call_id,
                           "output": "31 degrees Celsius and sunny"}], tools, previous_response_id=first.id)
    assert "31" in answer.output_text


def test_a_request_can_only_narrow_the_tools_the_server_offers(client):
    for tools, param, words in [
        ([{"type": "tabagent", "allowed_tools": ["memory_write"]}], "tools[0].allowed_tools", "agent.allow_writes"),
        ([{"type": "tabagent", "allowed_tools": ["rm_rf"]}], "tools[0].allowed_tools", "no such tool"),
        ([{"type": "web_search"}], "tools[0].type", "`web_search`"),
        ([{"type": "tabagent", "allowed_tools": "calculator"}], "tools[0].allowed_tools", "list"),
        ([{"type": "tabagent", "recall": "yes"}], "tools[0].recall", "true or false"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            run(client, "Hello", tools)
        error = refused.value.body
        assert error["param"] == param and words in error["message"], error


def test_an_unknown_model_is_a_404_before_anything_runs(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="Hi", tools=[{"type": "tabagent"}])
    with pytest.raises(openai.NotFoundError):
        list(client.responses.create(model="no-such-model", input="Hi", tools=[{"type": "tabagent"}],
                                     stream=True))
