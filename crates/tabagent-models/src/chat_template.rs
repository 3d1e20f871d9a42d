//! Chat templates from model files, rendered in a sandbox.
//!
//! Templates are Jinja source taken from untrusted model files (`tokenizer.chat_template`).
//! llama-cpp-python's CVE-2024-34359 ran arbitrary code through one. We render with minijinja,
//! which has no Python object model to escape through, and we give it no loader (so `include`
//! and `import` reach no file), no environment access, and a fuel budget so a hostile loop ends.
//! Settings match Hugging Face's renderer: `trim_blocks` and `lstrip_blocks` on.

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;
use tabagent_core::{ChatMessage, ToolSpec};

use crate::tool_calls::ToolFormat;

/// Instructions a single render may execute; real templates use a few thousand per message.
const FUEL: u64 = 5_000_000;

/// The most a render may write: far past any prompt a context holds, far below what would
/// hurt the process (fuel counts instructions, not bytes: one instruction can write a lot).
const MAX_RENDERED_BYTES: usize = 16 << 20;

/// The widest `indent` (minijinja's own takes any width, and allocates it at once).
const MAX_INDENT: usize = 256;

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template source is not valid Jinja.
    #[error("the chat template does not compile: {0}")]
    Compile(String),
    /// Rendering failed: the template raised an error (often about the message order) or ran out
    /// of its budget.
    #[error("the chat template rejected the conversation: {0}")]
    Render(String),
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    tool_format: ToolFormat,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

#[derive(Serialize)]
struct Context<'a> {
    messages: Vec<TemplateMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<serde_json::Value>>,
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
}

/// A message as Hugging Face's renderer hands it to a template: tool calls in OpenAI's shape
/// with their arguments as an object (templates write them with `tojson`), fields a turn does
/// not have left out (templates test them with `is defined`).
#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> From<&'a ChatMessage> for TemplateMessage<'a> {
    fn from(message: &'a ChatMessage) -> Self {
        let tool_calls = message
            .tool_calls
            .iter()
            .map(|call| {
                let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
                    .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
                serde_json::json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                })
            })
            .collect();
        Self {
            role: message.role.as_str(),
            content: &message.content,
            tool_calls,
            tool_call_id: message.tool_call_id.as_deref(),
            name: message.name.as_deref(),
        }
    }
}

/// A tool in the shape templates read (`tool.function.name`, or `tool | tojson`).
pub fn tool_json(spec: &ToolSpec) -> serde_json::Value {
    let mut function = serde_json::Map::new();
    function.insert("name".into(), spec.name.clone().into());
    if let Some(description) = &spec.description {
        function.insert("description".into(), description.clone().into());
    }
    function.insert("parameters".into(), spec.parameters.clone());
    serde_json::json!({"type": "function", "function": function})
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the model's special token texts.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter("indent", bounded_indent);
        env.add_template_owned("chat", source.to_string())
            .map_err(|err| TemplateError::Compile(describe(&err)))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            tool_format: ToolFormat::detect(source),
        })
    }

    /// How this template's model writes tool calls (and whether the template shows tools at
    /// all).
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    /// Renders `messages`, ending with the assistant's prompt when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// [`ChatTemplate::render`] offering `tools` (when not empty) to a template that reads
    /// `tools`; tool turns are passed as they are (see [`crate::tool_calls::plain_turns`] for
    /// templates without tool support).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|err| TemplateError::Compile(describe(&err)))?;
        let context = Context {
            messages: messages.iter().map(TemplateMessage::from).collect(),
            tools: (!tools.is_empty()).then(|| tools.iter().map(tool_json).collect()),
            add_generation_prompt,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
        };
        let mut out = Bounded(Vec::new(), false);
        let rendered = template.render_captured_to(context, &mut out);
        if out.1 {
            return Err(TemplateError::Render(format!(
                "the template wrote more than {} MiB",
                MAX_RENDERED_BYTES >> 20
            )));
        }
        rendered.map_err(|err| TemplateError::Render(describe(&err)))?;
        String::from_utf8(out.0)
            .map_err(|_| TemplateError::Render("the template wrote text that is not UTF-8".into()))
    }
}

/// Output that stops at [`MAX_RENDERED_BYTES`] (and says it did).
struct Bounded(Vec<u8>, bool);

impl std::io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > MAX_RENDERED_BYTES {
            self.1 = true;
            return Err(std::io::Error::other("the rendered prompt is too long"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Jinja's `indent(width=4, first=False, blank=False)` (positional or by keyword), with a
/// width of at most [`MAX_INDENT`] and a result of at most [`MAX_RENDERED_BYTES`].
fn bounded_indent(
    value: String,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, Error> {
    let width = match width {
        Some(width) => width,
        None => kwargs.get::<Option<usize>>("width")?.unwrap_or(4),
    };
    let first = match first {
        Some(first) => first,
        None => kwargs.get::<Option<bool>>("first")?.unwrap_or(false),
    };
    let blank = match blank {
        Some(blank) => blank,
        None => kwargs.get::<Option<bool>>("blank")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    if width > MAX_INDENT {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("indent width {width} is more than {MAX_INDENT}"),
        ));
    }
    let lines = value.split('\n').count();
    let size = value.len().saturating_add(lines.saturating_mul(width));
    if size > MAX_RENDERED_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "indent would write more than a prompt can hold",
        ));
    }
    let pad = " ".repeat(width);
    let mut out = String::with_capacity(size);
    for (i, line) in value.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // As Jinja: the first line only when asked, blank lines only when asked.
        let indented = match i {
            0 => first,
            _ => blank || !line.is_empty(),
        };
        if indented {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    Ok(out)
}

fn describe(err: &Error) -> String {
    match err.detail() {
        Some(detail) if err.kind() == ErrorKind::InvalidOperation => detail.to_string(),
        _ => err.to_string(),
    }
}

/// Widest `indent` a template may ask `tojson` for (a larger one only costs memory).
const MAX_JSON_INDENT: usize = 16;

/// `tojson` as Hugging Face's renderer has it (Python's `json.dumps`): `", "` and `": "`
/// between items, keys in their order, non-ASCII and `<>&'` written as they are; `indent`
/// and `sort_keys` as Python takes them. minijinja's own writes compact, HTML-escaped JSON,
/// which is not the text the model was trained on.
fn tojson(
    value: &Value,
    indent: Option<Value>,
    kwargs: minijinja::value::Kwargs,
) -> Result<Value, Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(indent) if indent.is_none() => None,
        Some(indent) => {
            let width = usize::try_from(indent.clone()).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson's indent must be a number",
                )
            })?;
            Some(width.min(MAX_JSON_INDENT))
        }
    };
    let json = serde_json::to_value(value)
        .map_err(|err| Error::new(ErrorKind::InvalidOperation, err.to_string()))?;
    let mut out = String::new();
    write_python_json(&mut out, &json, indent, sort_keys, 0);
    Ok(Value::from_safe_string(out))
}

/// `value` as Python's `json.dumps(value, ensure_ascii=False, indent=indent)` writes it.
fn write_python_json(
    out: &mut String,
    value: &serde_json::Value,
    indent: Option<usize>,
    sort_keys: bool,
    depth: usize,
) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match value {
        serde_json::Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                write_python_json(out, item, indent, sort_keys, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        serde_json::Value::Object(object) if !object.is_empty() => {
            let mut entries: Vec<_> = object.iter().collect();
            if sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_python_json(out, item, indent, sort_keys, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)` as Hugging Face templates use it, in UTC.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs, &format)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

fn format_utc(secs: u64, format: &str) -> String {
    let days = secs / 86_400;
    let (year, month, day) = tabagent_core::calendar::civil_from_days(days);
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let month_name = MONTHS[(month - 1) as usize];
    let weekday = WEEKDAYS[(days % 7) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{format_utc, ChatTemplate};

    #[test]
    fn tojson_writes_what_pythons_json_dumps_writes() {
        let source = "{{ {'b': [1, 'é<'], 'a': none, 'c': {}} | tojson }}|{{ {'b': [1], 'a': 2} | tojson(indent=2, sort_keys=true) }}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        assert_eq!(
            template.render(&[], false).unwrap(),
            "{\"b\": [1, \"é<\"], \"a\": null, \"c\": {}}|{\n  \"a\": 2,\n  \"b\": [\n    1\n  ]\n}"
        );
    }

    #[test]
    fn indent_is_jinjas_and_bounded() {
        let render = |source: &str| {
            ChatTemplate::new(source, "", "")
                .unwrap()
                .render(&[], false)
        };
        assert_eq!(
            render("{{ 'a\nb\n\nc\n' | indent(2) }}").unwrap(),
            "a\n  b\n\n  c\n"
        );
        assert_eq!(
            render("{{ 'a\n\nb' | indent(width=1, first=true, blank=true) }}").unwrap(),
            " a\n \n b"
        );
        // A width that would allocate without end is an error, not an abort.
        let err = render("{{ '' | indent(10**15) }}").unwrap_err().to_string();
        assert!(err.contains("indent width"), "{err}");
    }

    #[test]
    fn a_template_that_writes_without_end_is_stopped() {
        let template = "{% for i in range(100) %}{{ 'x' * 90000000 }}{% endfor %}";
        let err = ChatTemplate::new(template, "", "")
            .unwrap()
            .render(&[], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 16 MiB"), "{err}");
    }

    #[test]
    fn strftime_matches_known_dates() {
        // 2026-11-23 00:00:00 UTC was a Monday.
        assert_eq!(
            format_utc(1_795_392_000, "%d %b %Y %A %H:%M"),
            "23 Nov 2026 Monday 00:00"
        );
        assert_eq!(format_utc(951_782_400, "%Y-%m-%d"), "2000-02-29");
    }
}
