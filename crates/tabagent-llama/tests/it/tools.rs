//! Tool calling and log probabilities in the engine, on the real Qwen2.5-Coder GGUF (its
//! template reads `tools` and teaches `<tool_call>` tags) and SmolLM2 (whose template does not).

use serde_json::{json, Value};
use tabagent_core::{
    ChatMessage, FinishReason, GenerationEvent, GenerationParams, Role, ToolCall,
    ToolCallAssembler, ToolChoice, ToolSpec, Tools,
};
use tabagent_llama::{GenerationHandle, LlamaEngine};

use crate::{greedy, load, small_config};

fn qwen() -> LlamaEngine {
    let Some(path) = std::env::var_os("TABAGENT_TEST_QWEN_GGUF") else {
        panic!("TABAGENT_TEST_QWEN_GGUF is not set: run the tests with scripts/test, which fetches the model");
    };
    LlamaEngine::load(std::path::Path::new(&path), small_config()).expect("Qwen loads")
}

fn weather_tools(choice: ToolChoice) -> Tools {
    Tools {
        specs: vec![
            ToolSpec {
                name: "get_weather".into(),
                description: Some("The current weather in a city".into()),
                parameters: json!({"type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                    "required": ["city", "unit"]}),
                strict: true,
            },
            ToolSpec {
                name: "add".into(),
                description: Some("Adds two integers".into()),
                parameters: json!({"type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"]}),
                strict: false,
            },
        ],
        choice,
        parallel: false,
    }
}

struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    reason: FinishReason,
}

fn answer(mut handle: GenerationHandle) -> Answer {
    let (mut text, mut calls) = (String::new(), ToolCallAssembler::default());
    while let Some(event) = handle.events.blocking_recv() {
        match event {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::ToolCall(delta) => calls.push(&delta),
            GenerationEvent::Finished { reason, .. } => {
                return Answer {
                    text,
                    calls: calls.finish(),
                    reason,
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("the event stream ended without Finished");
}

fn with_tools(tools: Tools) -> GenerationParams {
    GenerationParams {
        tools,
        ..greedy(96)
    }
}

#[test]
fn a_forced_call_matches_the_named_functions_schema() {
    let engine = qwen();
    let messages = vec![ChatMessage::new(
        Role::User,
        "How warm is it in Lisbon right now?",
    )];
    let forced = weather_tools(ToolChoice::Function("get_weather".into()));
    let out = answer(engine.chat(&messages, with_tools(forced)).unwrap());
    assert_eq!(out.reason, FinishReason::ToolCalls, "{:?}", out.text);
    assert_eq!(out.calls.len(), 1);
    let call = &out.calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(
        call.id.starts_with("call_") && call.id.len() == 29,
        "{}",
        call.id
    );
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    assert!(
        ["celsius", "fahrenheit"].contains(&arguments["unit"].as_str().unwrap_or("")),
        "{arguments}"
    );
    assert!(out.text.trim().is_empty(), "{:?}", out.text);

    // `required` lets the model pick the function; it must still be a well-formed call.
    let messages = vec![ChatMessage::new(Role::User, "What is 19 plus 23?")];
    let out = answer(
        engine
            .chat(&messages, with_tools(weather_tools(ToolChoice::Required)))
            .unwrap(),
    );
    assert_eq!(out.reason, FinishReason::ToolCalls);
    assert_eq!(out.calls[0].name, "add");
    let arguments: Value = serde_json::from_str(&out.calls[0].arguments).unwrap();
    assert_eq!(
        (arguments["a"].as_i64(), arguments["b"].as_i64()),
        (Some(19), Some(23))
    );
}

#[test]
fn a_tool_result_turn_is_rendered_and_answered_in_text() {
    let engine = qwen();
    let messages = vec![
        ChatMessage::new(Role::User, "What is 19 plus 23?"),
        ChatMessage::assistant_calls(
            "",
            vec![ToolCall {
                id: "call_1".into(),
                name: "add".into(),
                arguments: r#"{"a": 19, "b": 23}"#.into(),
            }],
        ),
        ChatMessage::tool_result("call_1", "42"),
    ];
    let tools = weather_tools(ToolChoice::Auto);
    let prompt = engine.chat_prompt_with(&messages, &tools).unwrap();
    assert!(
        prompt.contains("<tools>") && prompt.contains("\"get_weather\""),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 19, \"b\": 23}}"),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_response>\n42\n</tool_response>"),
        "{prompt}"
    );

    // With `none` the tools are not shown, the turns still are, and whatever the model writes
    // is text (this small model answers with more call-shaped JSON, which stays text).
    let none = weather_tools(ToolChoice::None);
    let prompt = engine.chat_prompt_with(&messages, &none).unwrap();
    assert!(!prompt.contains("<tools>"), "{prompt}");
    assert!(
        prompt.contains("<tool_response>\n42\n</tool_response>"),
        "{prompt}"
    );
    let out = answer(engine.chat(&messages, with_tools(none)).unwrap());
    assert_ne!(out.reason, FinishReason::ToolCalls);
    assert!(
        out.calls.is_empty() && !out.text.trim().is_empty(),
        "{:?}",
        out.text
    );
}

#[test]
fn a_template_without_tools_gets_them_described_and_can_be_forced() {
    let engine = load(small_config());
    let tools = weather_tools(ToolChoice::Function("add".into()));
    let messages = vec![ChatMessage::new(Role::User, "Add 2 and 3.")];
    let prompt = engine.chat_prompt_with(&messages, &tools).unwrap();
    assert!(prompt.contains("You can call tools"), "{prompt}");
    assert!(prompt.contains("\"name\":\"add\""), "{prompt}");
    let out = answer(engine.chat(&messages, with_tools(tools)).unwrap());
    assert_eq!(out.reason, FinishReason::ToolCalls, "{:?}", out.text);
    assert_eq!(out.calls.len(), 1);
    assert_eq!(out.calls[0].name, "add");
    let arguments: Value = serde_json::from_str(&out.calls[0].arguments).unwrap();
    assert!(
        arguments["a"].is_i64() && arguments["b"].is_i64(),
        "{arguments}"
    );
}

#[test]
fn log_probabilities_come_for_every_generated_token() {
    let engine = load(small_config());
    let mut params = greedy(12);
    params.logprobs = Some(3);
    let mut handle = engine
        .chat(&[ChatMessage::new(Role::User, "Name a colour.")], params)
        .unwrap();
    let mut entries = Vec::new();
    let mut text = String::new();
    let usage = loop {
        match handle.events.blocking_recv().unwrap() {
            GenerationEvent::Logprobs(more) => entries.extend(more),
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Finished { usage, .. } => break usage,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(entries.len() as u32, usage.completion_tokens);
    let joined: Vec<u8> = entries.iter().flat_map(|e| e.bytes.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&joined), text);
    for entry in &entries {
        assert_eq!(entry.top.len(), 3);
        assert!(entry.logprob <= 0.0);
        // Greedy decoding picks the likeliest token: it heads the list, with the same number.
        assert_eq!(entry.top[0].token, entry.token);
        assert!((entry.top[0].logprob - entry.logprob).abs() < 1e-5);
        assert!(entry.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    }
    let mut too_many = greedy(4);
    too_many.logprobs = Some(21);
    assert!(engine
        .chat(&[ChatMessage::new(Role::User, "Hi")], too_many)
        .is_err());
}
