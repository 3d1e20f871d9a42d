//! A toolbox served over MCP: `tools/list` gives each tool's name, description and JSON
//! Schema; `tools/call` runs it through the toolbox (bounded in time and output, logged), and a
//! tool's failure comes back as a result with `isError`, as the protocol asks, not as a
//! protocol error.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use crate::tools::{ToolError, Toolbox};

/// An MCP server over a toolbox.
#[derive(Clone)]
pub struct ToolboxServer {
    toolbox: Toolbox,
    name: String,
    version: String,
    instructions: Option<String>,
}

impl ToolboxServer {
    /// Serves `toolbox` as `name` `version`, with `instructions` for the client's model.
    pub fn new(
        toolbox: Toolbox,
        name: impl Into<String>,
        version: impl Into<String>,
        instructions: Option<String>,
    ) -> Self {
        Self {
            toolbox,
            name: name.into(),
            version: version.into(),
            instructions,
        }
    }

    fn tools(&self) -> Vec<Tool> {
        self.toolbox
            .tools()
            .map(|tool| {
                let spec = tool.spec();
                let schema = match spec.parameters {
                    Value::Object(schema) => schema,
                    _ => JsonObject::new(),
                };
                let read_only = !tool.has_effects();
                Tool::new_with_raw(spec.name, spec.description.map(Into::into), schema)
                    .with_annotations(
                        ToolAnnotations::new()
                            .read_only(read_only)
                            .destructive(false)
                            .open_world(false),
                    )
            })
            .collect()
    }
}

impl ServerHandler for ToolboxServer {
    fn get_info(&self) -> ServerConfig {
        let config = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(self.name.clone(), self.version.clone()));
        match &self.instructions {
            Some(instructions) => config.with_instructions(instructions.clone()),
            None => config,
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let CallToolRequestParams {
            name, arguments, ..
        } = request;
        let arguments = Value::Object(arguments.unwrap_or_default());
        let called = self.toolbox.call(&name, arguments).await;
        match called.output {
            Ok(text) => Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into()),
            Err(ToolError::UnknownTool(name)) => Err(ErrorData::invalid_params(
                format!("there is no tool named {name:?}"),
                None,
            )),
            Err(error) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(error.to_string())]).into())
            }
        }
    }
}
