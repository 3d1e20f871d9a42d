"""Tool calling with a local model (Qwen2.5-Coder, in process) through the official OpenAI SDK."""
import json
import urllib.request

import jsonschema
import openai
import pytest

from conftest import TOOLS_MODEL

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string"},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Adds two integers",
    "parameters": {"type": "object",
                   "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}


@pytest.fixture(scope="module")
def client(server_url):
    return openai.OpenAI(base_url=server_url + "/v1", api_key="unused-on-loopback", max_retries=0)


def test_a_named_function_is_called_with_arguments_valid_against_its_schema(client):
    reply = client.chat.completions.create(
        model=TOOLS_MODEL, temperature=0,
        messages=[{"role": "user", "content": "Is it cold in Oslo today?"}],
        tools=[WEATHER, ADD], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_required_calls_stream_as_tool_call_deltas(client):
    stream = client.chat.completions.create(
        model=TOOLS_MODEL, temperature=0, stream=True,
        messages=[{"role": "user", "content": "What is 40 plus 2?"}],
        tools=[WEATHER, ADD], tool_choice="required")
    calls, finish = {}, None
    for chunk in stream:
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["add"]
    assert json.loads(calls[0]["arguments"]) == {"a": 40, "b": 2}
    assert calls[0]["id"].startswith("call_")


def prompt_tokens(server_url, messages):
    """What `messages` count as a prompt, rendered without tools (POST /v1/tokenize)."""
    request = urllib.request.Request(
        server_url + "/v1/tokenize", method="POST", headers={"content-type": "application/json"},
        data=json.dumps({"model": TOOLS_MODEL, "messages": messages}).encode())
    with urllib.request.urlopen(request) as response:
        return json.load(response)["count"]


def test_a_two_step_tool_loop_sends_the_result_back_and_ends_in_text(client, server_url):
    messages = [{"role": "user", "content": "What is the weather in Paris in celsius? Use the tool."}]
    first = client.chat.completions.create(
        model=TOOLS_MODEL, temperature=0, messages=messages, tools=[WEATHER, ADD])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert arguments["city"] == "Paris"
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": json.dumps({"city": "Paris", "temperature": 31, "unit": "celsius"})})
    # The turns go back through the model's template; `none` asks for the final text. (This
    # 0.5B model, offered the tools again, calls get_weather once more instead of answering.)
    second = client.chat.completions.create(
        model=TOOLS_MODEL, temperature=0, max_tokens=64, messages=messages,
        tools=[WEATHER, ADD], tool_choice="none")
    answer = second.choices[0]
    assert answer.finish_reason == "stop"
    assert not answer.message.tool_calls
    assert answer.message.content.strip()
    # Every turn, the call and its result too, was in the prompt.
    assert second.usage.prompt_tokens == prompt_tokens(server_url, messages)
    assert second.usage.prompt_tokens > prompt_tokens(server_url, messages[:1]) + 40
