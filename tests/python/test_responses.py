"""OpenAI's Responses API through the official SDK's `client.responses`, against a real tabagent
(SmolLM2 and Qwen2.5-Coder in process; responses kept in the server's memory)."""
import json

import jsonschema
import openai
import pytest

from conftest import MODEL, TOOLS_MODEL

WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


@pytest.fixture(scope="module")
def client(server_url):
    return openai.OpenAI(base_url=server_url + "/v1", api_key="unused-on-loopback", max_retries=0)


def test_a_response_holds_the_answer_and_its_usage(client):
    response = client.responses.create(model=MODEL, input="Name three colours.", temperature=0,
                                       max_output_tokens=12, instructions="Answer briefly.")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text and response.output_text == message.content[0].text
    assert response.usage.output_tokens == 12 and response.usage.input_tokens > 10
    assert response.instructions == "Answer briefly."


def test_streamed_events_add_up_to_the_stored_response(client):
    events = list(client.responses.create(model=MODEL, input="Say hello.", temperature=0,
                                          max_output_tokens=16, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text and final.output_text == text
    (done,) = [e for e in events if e.type == "response.output_text.done"]
    assert done.text == text
    assert client.responses.retrieve(final.id).output_text == text
    whole = client.responses.create(model=MODEL, input="Say hello.", temperature=0, max_output_tokens=16)
    assert whole.output_text == text


def test_previous_response_id_continues_the_stored_conversation(client):
    first = client.responses.create(model=MODEL, temperature=0, max_output_tokens=24,
                                    input="My name is Ada. Remember it.")
    second = client.responses.create(model=MODEL, temperature=0, max_output_tokens=8,
                                     previous_response_id=first.id, input="What is my name?")
    alone = client.responses.create(model=MODEL, temperature=0, max_output_tokens=8,
                                    input="What is my name?")
    # The first exchange was in the second prompt.
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert second.previous_response_id == first.id
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, previous_response_id=first.id, input="Hi")


def test_function_tools_are_called_and_their_output_answered(client):
    first = client.responses.create(model=TOOLS_MODEL, temperature=0, tools=[WEATHER],
                                    input="What is the weather in Paris? Use the tool.")
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id
    streamed = list(client.responses.create(model=TOOLS_MODEL, temperature=0, tools=[WEATHER], stream=True,
                                            input="What is the weather in Paris? Use the tool."))
    arguments = "".join(e.delta for e in streamed if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "Paris"}
    (item,) = [e.item for e in streamed if e.type == "response.output_item.done"]
    assert item.type == "function_call" and item.name == "get_weather"
    second = client.responses.create(
        model=TOOLS_MODEL, temperature=0, max_output_tokens=48, previous_response_id=first.id,
        tools=[WEATHER], tool_choice="none",
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": json.dumps({"temperature": 31, "unit": "celsius"})}])
    assert second.output_text.strip()
    assert not [item for item in second.output if item.type == "function_call"]


def test_a_forced_function_and_a_schema_hold_the_output(client):
    forced = client.responses.create(model=TOOLS_MODEL, temperature=0, tools=[WEATHER],
                                     tool_choice={"type": "function", "name": "get_weather"},
                                     input="Tell me a joke.")
    (call,) = forced.output
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"],
              "additionalProperties": False}
    shaped = client.responses.create(model=MODEL, temperature=0, max_output_tokens=64,
                                     input="Pick a colour.",
                                     text={"format": {"type": "json_schema", "name": "pick", "schema": schema}})
    jsonschema.validate(json.loads(shaped.output_text), schema)


def test_mistakes_are_clear_400s(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model=MODEL, input=[{"type": "reasoning", "summary": []}])
    assert "reasoning" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="Hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="Hi")
