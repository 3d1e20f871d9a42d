//! Tool calls in a model's output: which format a model's template teaches it, and a streaming
//! parser that finds the calls in what the model actually writes.
//!
//! Models do not always write the format their template asks for: Qwen2.5-Coder, asked for
//! `<tool_call>` tags, usually answers with a fenced JSON block. The parser therefore accepts
//! every common shape whatever the template (`<tool_call>` tags, fenced JSON, a bare JSON
//! object or list at the start, `[TOOL_CALLS]`, `<|python_tag|>`), with `arguments` or
//! `parameters`, and takes a block as a call only when it names a tool the request offered:
//! anything else stays text. Text streams through as it comes, except what could still turn
//! out to be a call, which is held until it is decided.

use serde_json::{Map, Value};
use tabagent_core::{ChatMessage, Role, Tools};

/// How a template shows tools and how its model is taught to call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (Hermes, Qwen 2.5, SmolLM3).
    Hermes,
    /// `[TOOL_CALLS][{"name": ..., "arguments": ...}]` (Mistral).
    Mistral,
    /// `{"name": ..., "parameters": ...}`, or after `<|python_tag|>` (Llama 3.1 and later).
    Llama3,
    /// The template reads `tools` in a way not recognised here: calls as bare JSON.
    Json,
    /// The template never reads `tools`: tabagent describes them in the system message and
    /// asks for bare JSON (llama.cpp's server calls this its generic format).
    Unsupported,
}

impl ToolFormat {
    /// The format a chat template's source teaches.
    pub fn detect(source: &str) -> ToolFormat {
        if source.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if source.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            ToolFormat::Llama3
        } else if source.contains("tools") {
            ToolFormat::Json
        } else {
            ToolFormat::Unsupported
        }
    }

    /// The text that starts a call in this format, when it has one (a lazy grammar waits for
    /// it).
    pub fn trigger(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes => Some(HERMES_OPEN),
            ToolFormat::Mistral => Some(MISTRAL_OPEN),
            ToolFormat::Llama3 | ToolFormat::Json | ToolFormat::Unsupported => None,
        }
    }

    /// The GBNF root rule of an answer that is nothing but calls, each matching the rule
    /// `call`: one call, or with `parallel` one or more.
    pub fn grammar_root(self, call: &str, parallel: bool) -> String {
        match self {
            ToolFormat::Hermes => {
                let block = format!(r#""<tool_call>\n" {call} "\n</tool_call>""#);
                if parallel {
                    format!("root ::= {block} (\"\\n\" {block})*")
                } else {
                    format!("root ::= {block}")
                }
            }
            ToolFormat::Mistral => {
                let more = if parallel {
                    format!(r#" ("," {call})*"#)
                } else {
                    String::new()
                };
                format!(r#"root ::= "[TOOL_CALLS][" {call}{more} "]""#)
            }
            ToolFormat::Llama3 | ToolFormat::Json | ToolFormat::Unsupported => {
                if parallel {
                    format!(r#"root ::= {call} | "[" {call} ("," {call})* "]""#)
                } else {
                    format!("root ::= {call}")
                }
            }
        }
    }
}

/// The JSON Schema of one call to any of `specs`: `{"name": <one of them>, "arguments": <its
/// parameters>}`, name first. Written as text so the keys keep their order (a grammar follows
/// the schema's order, and models write the name first).
pub fn call_schema<'a>(specs: impl Iterator<Item = (&'a str, &'a Value)>) -> String {
    let variants: Vec<String> = specs
        .map(|(name, parameters)| {
            format!(
                r#"{{"type":"object","properties":{{"name":{{"const":{}}},"arguments":{}}},"required":["name","arguments"],"additionalProperties":false}}"#,
                Value::String(name.to_string()),
                parameters
            )
        })
        .collect();
    match variants.as_slice() {
        [one] => one.clone(),
        _ => format!(r#"{{"anyOf":[{}]}}"#, variants.join(",")),
    }
}

/// `messages` for a template that does not read `tools` (`ToolFormat::Unsupported`): the
/// tools and the answer format described in the system message, earlier calls written as the
/// JSON the model is asked for, and tool results as user turns.
pub fn plain_turns(messages: &[ChatMessage], tools: &Tools) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = messages
        .iter()
        .map(|message| match message.role {
            Role::Assistant if !message.tool_calls.is_empty() => {
                let calls: Vec<Value> = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        let arguments = serde_json::from_str(&call.arguments)
                            .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                        serde_json::json!({"name": call.name, "arguments": arguments})
                    })
                    .collect();
                let calls = match calls.as_slice() {
                    [one] => one.to_string(),
                    _ => Value::Array(calls).to_string(),
                };
                let content = if message.content.trim().is_empty() {
                    calls
                } else {
                    format!("{}\n{calls}", message.content)
                };
                ChatMessage::new(Role::Assistant, content)
            }
            Role::Tool => {
                let who = message
                    .name
                    .as_deref()
                    .or(message.tool_call_id.as_deref())
                    .unwrap_or("tool");
                ChatMessage::new(Role::User, format!("Result of {who}:\n{}", message.content))
            }
            _ => message.clone(),
        })
        .collect();
    if !tools.active() {
        return out;
    }
    let mut described = String::from(
        "You can call tools. To call one, answer with nothing but a JSON object \
         {\"name\": <tool name>, \"arguments\": <arguments object>}",
    );
    if tools.parallel {
        described.push_str(", or a JSON list of such objects to call several");
    }
    described.push_str(match tools.forced() {
        true => ". You must call a tool now.",
        false => ". Otherwise answer normally.",
    });
    described.push_str(" The tools:");
    for spec in tools.callable() {
        described.push('\n');
        described.push_str(&crate::chat_template::tool_json(spec)["function"].to_string());
    }
    match out.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{described}", first.content);
        }
        _ => out.insert(0, ChatMessage::new(Role::System, described)),
    }
    out
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";
const FENCE: &str = "```";

/// Openers recognised anywhere in the text.
const INLINE_OPENERS: [&str; 6] = [
    HERMES_OPEN,
    MISTRAL_OPEN,
    PYTHON_TAG,
    FENCE,
    "{\"name\"",
    "{\"function\"",
];

/// Openers recognised at the start of the answer (a bare JSON value is a call only there, or
/// when it starts like one).
const LEADING_OPENERS: [&str; 6] = [HERMES_OPEN, MISTRAL_OPEN, PYTHON_TAG, FENCE, "{", "["];

/// Fenced blocks with these languages may hold a call; others stream as text.
const CALL_FENCES: [&str; 5] = ["", "json", "tool_call", "tool_code", "javascript"];

/// A call found in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    /// The function.
    pub name: String,
    /// Its arguments as compact JSON text.
    pub arguments: String,
}

/// What the parser lets out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Text for the caller.
    Text(String),
    /// A tool call.
    Call(ParsedCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// `<tool_call>` ... `</tool_call>`.
    Tagged,
    /// A fenced block that may hold JSON.
    Fence,
    /// A JSON value, to its closing bracket.
    Json,
    /// `[TOOL_CALLS]` or `<|python_tag|>`: everything to the end.
    ToEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace yet.
    Leading,
    /// Plain text.
    Text,
    /// Inside a fenced block of code that is not a call.
    CodeFence,
    /// Inside what may be a call.
    Block(Block),
}

/// Finds tool calls in streamed output.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    names: Vec<String>,
    parallel: bool,
    mode: Mode,
    held: String,
    calls: usize,
}

impl ToolCallParser {
    /// A parser that takes a block as a call only when it names one of `names`; with
    /// `parallel` false, calls after the first are dropped.
    pub fn new(names: Vec<String>, parallel: bool) -> Self {
        Self {
            names,
            parallel,
            mode: Mode::Leading,
            held: String::new(),
            calls: 0,
        }
    }

    /// For the tools a request offers.
    pub fn for_tools(tools: &Tools) -> Self {
        Self::new(
            tools.callable().map(|spec| spec.name.clone()).collect(),
            tools.parallel,
        )
    }

    /// Adds output; returns what is decided.
    pub fn push(&mut self, text: &str) -> Vec<Parsed> {
        self.held.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out) {}
        out
    }

    /// Ends the output: what is held is decided as it stands.
    pub fn finish(&mut self) -> Vec<Parsed> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        match self.mode {
            Mode::Block(block) => self.decide(block, held, &mut out),
            Mode::Text if self.calls > 0 && held.trim().is_empty() => {}
            Mode::Leading | Mode::Text | Mode::CodeFence => push_text(&mut out, held),
        }
        self.mode = Mode::Text;
        out
    }

    /// Moves on as far as the held text allows; `false` when it needs more.
    fn step(&mut self, out: &mut Vec<Parsed>) -> bool {
        match self.mode {
            Mode::Leading => {
                let trimmed = self.held.trim_start();
                if trimmed.is_empty() {
                    return false;
                }
                if let Some(block) = LEADING_OPENERS
                    .iter()
                    .find(|opener| trimmed.starts_with(**opener))
                    .map(|opener| block_of(opener))
                {
                    // Whitespace before a call is not worth an empty-looking content.
                    let start = self.held.len() - trimmed.len();
                    self.held.drain(..start);
                    self.mode = Mode::Block(block);
                    return true;
                }
                if LEADING_OPENERS.iter().any(|o| o.starts_with(trimmed)) {
                    return false;
                }
                self.mode = Mode::Text;
                true
            }
            Mode::Text => {
                let found = INLINE_OPENERS
                    .iter()
                    .filter_map(|opener| self.held.find(opener).map(|at| (at, *opener)))
                    .min_by_key(|(at, _)| *at);
                let split = match found {
                    Some((at, _)) => at,
                    None => self.held.len() - partial_suffix(&self.held, &INLINE_OPENERS),
                };
                // Whitespace between and after calls is not sent: it would make a content of
                // nothing but a newline beside the calls.
                let quiet = self.calls > 0 && self.held[..split].trim().is_empty();
                match found {
                    Some((at, opener)) => {
                        if !quiet {
                            push_text(out, self.held[..at].to_string());
                        }
                        self.held.drain(..at);
                        self.mode = Mode::Block(block_of(opener));
                        true
                    }
                    None if quiet => false,
                    None => {
                        push_text(out, self.held[..split].to_string());
                        self.held.drain(..split);
                        false
                    }
                }
            }
            Mode::CodeFence => match self.held.find(FENCE) {
                Some(at) => {
                    let end = at + FENCE.len();
                    push_text(out, self.held[..end].to_string());
                    self.held.drain(..end);
                    self.mode = Mode::Text;
                    true
                }
                None => {
                    let keep = partial_suffix(&self.held, &[FENCE]);
                    let split = self.held.len() - keep;
                    push_text(out, self.held[..split].to_string());
                    self.held.drain(..split);
                    false
                }
            },
            Mode::Block(block) => {
                let Some(end) = self.block_end(block) else {
                    return false;
                };
                let held: String = self.held.drain(..end).collect();
                if self.mode == Mode::CodeFence {
                    // The fence turned out to hold code, not a call: its opening streams now.
                    push_text(out, held);
                    return true;
                }
                self.decide(block, held, out);
                self.mode = Mode::Text;
                true
            }
        }
    }

    /// Where the block at the start of `held` ends, when it has; a fence found to hold code
    /// switches to `CodeFence` and ends at its first line.
    fn block_end(&mut self, block: Block) -> Option<usize> {
        let held = &self.held;
        match block {
            Block::Tagged => held.find(HERMES_CLOSE).map(|at| at + HERMES_CLOSE.len()),
            Block::Json => json_end(held),
            Block::ToEnd => None,
            Block::Fence => {
                let newline = held.find('\n')?;
                let language = held[FENCE.len()..newline].trim();
                let body = held[newline + 1..].trim_start();
                let code = !CALL_FENCES.contains(&language.to_ascii_lowercase().as_str())
                    || body.chars().next().is_some_and(|c| c != '{' && c != '[');
                if code {
                    self.mode = Mode::CodeFence;
                    return Some(newline + 1);
                }
                held[newline + 1..]
                    .find(FENCE)
                    .map(|at| newline + 1 + at + FENCE.len())
            }
        }
    }

    /// A whole block: its calls, or its text when it holds none.
    fn decide(&mut self, block: Block, text: String, out: &mut Vec<Parsed>) {
        match parse_block(block, &text, &self.names) {
            Some(calls) if !calls.is_empty() => {
                for call in calls {
                    if self.parallel || self.calls == 0 {
                        out.push(Parsed::Call(call));
                    }
                    self.calls += 1;
                }
            }
            _ => push_text(out, text),
        }
    }
}

fn push_text(out: &mut Vec<Parsed>, text: String) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Parsed::Text(last)) => last.push_str(&text),
        _ => out.push(Parsed::Text(text)),
    }
}

fn block_of(opener: &str) -> Block {
    match opener {
        HERMES_OPEN => Block::Tagged,
        FENCE => Block::Fence,
        MISTRAL_OPEN | PYTHON_TAG => Block::ToEnd,
        _ => Block::Json,
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of one of `openers`.
fn partial_suffix(text: &str, openers: &[&str]) -> usize {
    let mut best = 0;
    for opener in openers {
        let max = opener.len().saturating_sub(1).min(text.len());
        for len in (best + 1..=max).rev() {
            let start = text.len() - len;
            if text.is_char_boundary(start) && opener.starts_with(&text[start..]) {
                best = len;
                break;
            }
        }
    }
    best
}

/// The end (exclusive) of the JSON object or list `text` starts with, by its brackets outside
/// strings; `None` while it is open.
fn json_end(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, byte) in text.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The calls a block holds, or `None` when it is not (only) calls to offered tools.
fn parse_block(block: Block, text: &str, names: &[String]) -> Option<Vec<ParsedCall>> {
    let body = match block {
        Block::Tagged => {
            let inner = text.strip_prefix(HERMES_OPEN)?;
            inner.strip_suffix(HERMES_CLOSE).unwrap_or(inner)
        }
        Block::Fence => {
            let (_, rest) = text.split_once('\n')?;
            let rest = rest.trim_end();
            rest.strip_suffix(FENCE).unwrap_or(rest)
        }
        Block::Json => text,
        Block::ToEnd => {
            let rest = text
                .strip_prefix(MISTRAL_OPEN)
                .or_else(|| text.strip_prefix(PYTHON_TAG))?;
            if let Some(calls) = mistral_args(rest, names) {
                return Some(calls);
            }
            rest
        }
    };
    json_calls(body, names)
}

/// Mistral's newer `name[ARGS]{...}` calls, one after another.
fn mistral_args(text: &str, names: &[String]) -> Option<Vec<ParsedCall>> {
    if !text.contains("[ARGS]") {
        return None;
    }
    let mut calls = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("[ARGS]")?;
        let name = name.trim().trim_start_matches(MISTRAL_OPEN).trim();
        let after = after.trim_start();
        let end = json_end(after)?;
        let arguments: Value = serde_json::from_str(&after[..end]).ok()?;
        calls.push(checked_call(name, arguments, names)?);
        rest = after[end..].trim_start();
    }
    Some(calls)
}

/// One or more JSON values (separated by whitespace, `,` or `;`), each a call or a list of
/// calls.
fn json_calls(text: &str, names: &[String]) -> Option<Vec<ParsedCall>> {
    let mut calls = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = json_end(rest)?;
        let value: Value = serde_json::from_str(&rest[..end]).ok()?;
        collect_calls(value, names, &mut calls)?;
        rest = rest[end..].trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == ';');
    }
    (!calls.is_empty()).then_some(calls)
}

fn collect_calls(value: Value, names: &[String], calls: &mut Vec<ParsedCall>) -> Option<()> {
    match value {
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                collect_calls(item, names, calls)?;
            }
            Some(())
        }
        Value::Object(object) => {
            calls.push(call_from(object, names)?);
            Some(())
        }
        _ => None,
    }
}

fn call_from(mut object: Map<String, Value>, names: &[String]) -> Option<ParsedCall> {
    for wrapper in ["tool_call", "function_call"] {
        if let Some(Value::Object(inner)) = object.remove(wrapper) {
            return call_from(inner, names);
        }
    }
    if let Some(Value::Object(function)) = object.remove("function") {
        return call_from(function, names);
    }
    let name = object.remove("name")?;
    let arguments = ["arguments", "parameters", "args", "input"]
        .iter()
        .find_map(|key| object.remove(*key))
        .unwrap_or_else(|| Value::Object(Map::new()));
    checked_call(name.as_str()?, arguments, names)
}

/// A call to `name` when it is offered, its arguments as JSON text (a string holding JSON is
/// taken as that JSON).
fn checked_call(name: &str, arguments: Value, names: &[String]) -> Option<ParsedCall> {
    if !names.iter().any(|n| n == name) {
        return None;
    }
    let arguments = match arguments {
        Value::Null => Value::Object(Map::new()),
        Value::String(text) => serde_json::from_str(&text).ok()?,
        other => other,
    };
    if !arguments.is_object() {
        return None;
    }
    Some(ParsedCall {
        name: name.to_string(),
        arguments: arguments.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(pieces: &[&str]) -> Vec<Parsed> {
        let mut parser = ToolCallParser::new(vec!["get_weather".into(), "add".into()], true);
        let mut out = Vec::new();
        for piece in pieces {
            for parsed in parser.push(piece) {
                merge(&mut out, parsed);
            }
        }
        for parsed in parser.finish() {
            merge(&mut out, parsed);
        }
        out
    }

    fn merge(out: &mut Vec<Parsed>, parsed: Parsed) {
        match (out.last_mut(), parsed) {
            (Some(Parsed::Text(last)), Parsed::Text(more)) => last.push_str(&more),
            (_, parsed) => out.push(parsed),
        }
    }

    fn call(name: &str, arguments: &str) -> Parsed {
        Parsed::Call(ParsedCall {
            name: name.into(),
            arguments: arguments.into(),
        })
    }

    #[test]
    fn hermes_tags_split_across_pieces_are_calls() {
        let out = parse_all(&[
            "<tool",
            "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_",
            "call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>",
        ]);
        assert_eq!(
            out,
            vec![
                call("get_weather", r#"{"city":"Paris"}"#),
                call("add", r#"{"a":1,"b":2}"#),
            ]
        );
    }

    #[test]
    fn a_fenced_json_call_after_text_is_a_call_and_the_text_streams() {
        let mut parser = ToolCallParser::new(vec!["get_weather".into()], true);
        assert_eq!(
            parser.push("Sure. Let me check.\n``"),
            vec![Parsed::Text("Sure. Let me check.\n".into())]
        );
        assert!(parser
            .push("`json\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\n")
            .is_empty());
        assert_eq!(
            parser.push("```"),
            vec![call("get_weather", r#"{"city":"Oslo"}"#)]
        );
        assert!(parser.finish().is_empty());
    }

    #[test]
    fn code_fences_and_unknown_functions_stay_text() {
        let code = "Here:\n```python\nprint({\"name\": 1})\n```\ndone";
        assert_eq!(parse_all(&[code]), vec![Parsed::Text(code.into())]);
        let unknown = "```json\n{\"name\": \"rm_rf\", \"arguments\": {}}\n```";
        assert_eq!(parse_all(&[unknown]), vec![Parsed::Text(unknown.into())]);
        let data = "{\"city\": \"Paris\"} is JSON";
        assert_eq!(parse_all(&[data]), vec![Parsed::Text(data.into())]);
    }

    #[test]
    fn bare_json_lists_mistral_and_python_tag_forms_are_calls() {
        assert_eq!(
            parse_all(&[
                r#" [{"name": "add", "arguments": {"a": 1}}, {"function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]"#
            ]),
            vec![
                call("add", r#"{"a":1}"#),
                call("get_weather", r#"{"city":"Rome"}"#),
            ]
        );
        assert_eq!(
            parse_all(&[r#"[TOOL_CALLS][{"name": "add", "arguments": {"a": 2}}]"#]),
            vec![call("add", r#"{"a":2}"#)]
        );
        assert_eq!(
            parse_all(&[r#"[TOOL_CALLS]add[ARGS]{"a": 3}"#]),
            vec![call("add", r#"{"a":3}"#)]
        );
        assert_eq!(
            parse_all(&[
                r#"<|python_tag|>{"name": "add", "parameters": {"a": 4}}; {"name": "add", "parameters": {"a": 5}}"#
            ]),
            vec![call("add", r#"{"a":4}"#), call("add", r#"{"a":5}"#)]
        );
    }

    #[test]
    fn an_unclosed_tag_at_the_end_is_still_a_call_and_one_call_only_without_parallel() {
        let mut parser = ToolCallParser::new(vec!["add".into()], false);
        let mut out = parser.push(
            "<tool_call>\n{\"name\": \"add\", \"arguments\": {}}\n</tool_call><tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}",
        );
        out.extend(parser.finish());
        assert_eq!(out, vec![call("add", "{}")]);
    }

    #[test]
    fn templates_are_told_apart_and_grammar_roots_frame_calls() {
        assert_eq!(
            ToolFormat::detect("{% if tools %}<tool_call>{% endif %}"),
            ToolFormat::Hermes
        );
        assert_eq!(
            ToolFormat::detect("{{ '[TOOL_CALLS]' }}"),
            ToolFormat::Mistral
        );
        assert_eq!(
            ToolFormat::detect("{{- '<|im_start|>' + message.role }}"),
            ToolFormat::Unsupported
        );
        assert_eq!(
            ToolFormat::Hermes.grammar_root("call", false),
            r#"root ::= "<tool_call>\n" call "\n</tool_call>""#
        );
        let schema: Value = serde_json::from_str(&call_schema(
            [("a", &serde_json::json!({"type": "object"}))].into_iter(),
        ))
        .unwrap();
        assert_eq!(schema["properties"]["name"]["const"], "a");
    }
}
