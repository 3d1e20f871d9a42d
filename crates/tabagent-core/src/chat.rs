//! Chat messages as engines see them: a role, text, and the typed parts a turn may carry besides
//! text (images, the tool calls an assistant made, the call a tool result answers).

/// Who wrote a message in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person (or program) asking.
    User,
    /// The model's earlier replies.
    Assistant,
    /// The result of a tool the assistant called.
    Tool,
}

impl Role {
    /// The name chat templates expect in `message.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A call the assistant made to one of the tools it was offered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToolCall {
    /// The id the tool's result names (`tool_call_id`).
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments: JSON text, as the model wrote them (usually an object).
    pub arguments: String,
}

/// An image in a user's turn: a `data:` URL (or, for remote engines only, an `http(s)` URL that
/// the engine fetches itself), placed at a byte offset of the message's text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePart {
    /// Where in `content` the image stands (a character boundary; `0` is before all text).
    pub offset: usize,
    /// The image: `data:image/...;base64,...` or a URL.
    pub url: String,
    /// OpenAI's `detail` hint (`low`, `high`, `auto`), passed on to engines that read it.
    pub detail: Option<String>,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What they wrote (all text parts, in order).
    pub content: String,
    /// Images among the text, in order of `offset`.
    pub images: Vec<ImagePart>,
    /// For an assistant turn, the tools it called.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool turn, the call it answers.
    pub tool_call_id: Option<String>,
    /// For a tool turn, the tool's name, when the caller gave it.
    pub name: Option<String>,
}

impl ChatMessage {
    /// A text message from `role` with `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// An assistant turn that called `calls` (after `content`, which may be empty).
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// A tool turn: `content` is the result of call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// Whether it is plain text: no images, tool calls or tool results.
    pub fn is_text(&self) -> bool {
        self.images.is_empty() && self.tool_calls.is_empty() && self.role != Role::Tool
    }
}
