"""The official OpenAI Python SDK, unmodified, against tabagent."""
import json
import os

import jsonschema
import openai
import pytest

from conftest import EMBEDDING_MODEL, MODEL


@pytest.fixture(scope="module")
def client(server_url):
    return openai.OpenAI(base_url=server_url + "/v1", api_key="unused-on-loopback", max_retries=0)


def test_models_lists_the_imported_model(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids


def test_chat_completion_returns_text_and_usage(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Name a colour."}],
        max_tokens=16, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_chunks_add_up_and_report_usage(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text.strip()
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0


def test_the_engine_reports_its_timings_as_llama_server_does(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=12, temperature=0)
    timings = reply.model_extra["timings"]
    assert timings["prompt_n"] == reply.usage.prompt_tokens
    assert timings["predicted_n"] == reply.usage.completion_tokens
    assert timings["prompt_ms"] > 0 and timings["predicted_ms"] > 0
    # Decode steps: the tokens sampled after the first (an end-of-generation token included).
    steps = round(timings["predicted_per_second"] * timings["predicted_ms"] / 1000)
    assert timings["predicted_n"] - 1 <= steps <= timings["predicted_n"]
    assert steps == timings["predicted_n"] - (reply.choices[0].finish_reason == "length")
    # (Another question: the same one again would be the cache's answer, which has no times.)
    finishing = [chunk for chunk in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}],
        max_tokens=12, temperature=0, stream=True) if chunk.choices and chunk.choices[0].finish_reason]
    (last,) = finishing
    assert last.model_extra["timings"]["predicted_n"] > 0
    assert last.model_extra["timings"]["predicted_ms"] > 0


def test_max_tokens_gives_finish_reason_length(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=3, temperature=0)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": schema, "strict": True}},
        max_tokens=80, temperature=0)
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_legacy_completions(client):
    reply = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5,
                                      temperature=0)
    assert reply.choices[0].text
    assert reply.usage.completion_tokens > 0


def test_legacy_completions_give_logprobs_in_their_own_shape(client):
    reply = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                      temperature=0, logprobs=3)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == reply.usage.completion_tokens
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert all(p <= 0 for p in logprobs.token_logprobs)
    assert all(len(top) == 3 for top in logprobs.top_logprobs)
    # Each token's offset is where it starts in the text.
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    streamed = [chunk.choices[0] for chunk in client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=3,
        stream=True) if chunk.choices and chunk.choices[0].logprobs]
    assert [t for c in streamed for t in c.logprobs.tokens] == logprobs.tokens
    assert [o for c in streamed for o in c.logprobs.text_offset] == logprobs.text_offset


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model",
                                       messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"


def test_a_tool_choice_naming_no_offered_tool_is_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "weather?"}],
            tools=[{"type": "function", "function": {"name": "weather", "parameters": {}}}],
            tool_choice={"type": "function", "function": {"name": "forecast"}})
    assert err.value.body["param"] == "tool_choice"


def test_logprobs_come_with_each_token_streamed_or_not(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 2 and entry.logprob <= 0
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, stream=True)
    streamed = [e for chunk in stream if chunk.choices and chunk.choices[0].logprobs
                for e in chunk.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in entries]


def test_embeddings_in_float_and_base64_agree(client):
    texts = ["The cat sits on the mat.", "A kitten rests on a rug.", "Stock prices fell."]
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert all(len(d.embedding) == 384 for d in floats.data)
    assert floats.usage.prompt_tokens > 0
    # The SDK asks for base64 by default and decodes it itself.
    decoded = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    for a, b in zip(floats.data, decoded.data):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-7)

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b))

    cat, kitten, stocks = (d.embedding for d in floats.data)
    assert cosine(cat, kitten) > cosine(cat, stocks)


def test_embeddings_refuse_a_chat_model_clearly(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.embeddings.create(model=MODEL, input="hello")
    assert "language model" in str(error.value)


def test_audio_transcription_through_the_sdk(client):
    # espeak-ng said "hello world" (scripts/test); Whisper tiny.en hears robotic speech roughly.
    with open(os.environ["TABAGENT_TEST_SPEECH_WAV"], "rb") as audio:
        transcript = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert "world" in transcript.text.lower()
    with open(os.environ["TABAGENT_TEST_SPEECH_WAV"], "rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json")
    assert verbose.language == "en" and verbose.duration > 0.5


def test_empty_audio_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=("empty.wav", b""))
