//! The tools a chat request offers the model, and what it may do with them.

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name (`[A-Za-z0-9_-]`, at most 64 characters, as OpenAI's).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments as a JSON Schema (an object schema; `{"type": "object"}` when none given).
    pub parameters: serde_json::Value,
    /// The arguments must match `parameters` exactly (enforced by a grammar where the engine
    /// can).
    pub strict: bool,
}

/// Whether the model must, may or must not call a tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool is called; the tools are not shown to the model.
    None,
    /// At least one tool is called.
    Required,
    /// This function is called.
    Function(String),
}

/// The tools of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    /// The functions offered.
    pub specs: Vec<ToolSpec>,
    /// What the model may do with them.
    pub choice: ToolChoice,
    /// More than one call in one answer is allowed.
    pub parallel: bool,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            specs: Vec::new(),
            choice: ToolChoice::Auto,
            parallel: true,
        }
    }
}

impl Tools {
    /// Whether the model is offered any tool it may call.
    pub fn active(&self) -> bool {
        !self.specs.is_empty() && self.choice != ToolChoice::None
    }

    /// Whether the answer must be a call (`required` or a named function).
    pub fn forced(&self) -> bool {
        self.active() && matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }

    /// The specs the model may call: all of them, or the one `choice` names.
    pub fn callable(&self) -> impl Iterator<Item = &ToolSpec> {
        self.specs.iter().filter(|spec| match &self.choice {
            ToolChoice::None => false,
            ToolChoice::Function(name) => &spec.name == name,
            ToolChoice::Auto | ToolChoice::Required => true,
        })
    }

    /// The spec named `name`, if offered.
    pub fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.specs.iter().find(|spec| spec.name == name)
    }
}

/// A piece of a tool call as it streams: the first piece of a call (by `index`) brings its id
/// and name; later pieces, more of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, ...).
    pub index: usize,
    /// Its id, on its first piece.
    pub id: Option<String>,
    /// The function's name, on its first piece.
    pub name: Option<String>,
    /// More of the arguments' JSON text.
    pub arguments: String,
}

/// Puts streamed tool-call pieces together into whole calls, in order of their index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallAssembler {
    calls: Vec<crate::chat::ToolCall>,
}

impl ToolCallAssembler {
    /// Adds one piece. An index past the next new call is taken as the next new call.
    pub fn push(&mut self, delta: &ToolCallDelta) {
        let index = delta.index.min(self.calls.len());
        if index == self.calls.len() {
            self.calls.push(crate::chat::ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let call = &mut self.calls[index];
        if let Some(id) = &delta.id {
            call.id.clone_from(id);
        }
        if let Some(name) = &delta.name {
            call.name.push_str(name);
        }
        call.arguments.push_str(&delta.arguments);
    }

    /// Whether no piece came.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls put together.
    pub fn finish(self) -> Vec<crate::chat::ToolCall> {
        self.calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_into_calls_by_index() {
        let mut calls = ToolCallAssembler::default();
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| ToolCallDelta {
            index,
            id: id.map(str::to_string),
            name: name.map(str::to_string),
            arguments: arguments.to_string(),
        };
        calls.push(&piece(0, Some("a"), Some("f"), ""));
        calls.push(&piece(0, None, None, "{\"x\":"));
        calls.push(&piece(7, Some("b"), Some("g"), "{}"));
        calls.push(&piece(0, None, None, "1}"));
        let calls = calls.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (
                calls[0].id.as_str(),
                calls[0].name.as_str(),
                calls[0].arguments.as_str()
            ),
            ("a", "f", "{\"x\":1}")
        );
        assert_eq!((calls[1].id.as_str(), calls[1].name.as_str()), ("b", "g"));
    }

    #[test]
    fn a_named_choice_offers_only_that_function() {
        let spec = |name: &str| ToolSpec {
            name: name.to_string(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
            strict: false,
        };
        let tools = Tools {
            specs: vec![spec("a"), spec("b")],
            choice: ToolChoice::Function("b".into()),
            parallel: true,
        };
        assert!(tools.forced());
        let names: Vec<_> = tools.callable().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        let none = Tools {
            choice: ToolChoice::None,
            ..tools
        };
        assert!(!none.active() && none.callable().next().is_none());
    }
}
