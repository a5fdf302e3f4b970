//! `cluster-slurm mcp`: the `cluster_slurm` tool over MCP (stdio), with the
//! guest's own description and JSON Schema and the same results as `call`.
//!
//! One server process keeps its SSH connections warm across every call of a
//! session. Results come back twice, as MCP asks: the JSON text block, and
//! the same object as `structuredContent`. A refusal or failure of the tool
//! is an MCP *tool error* (`isError: true`) carrying the guest's message and
//! its kind; a JSON-RPC error is reserved for a call the server cannot
//! understand at all (an unknown tool name) and for host bugs.
//!
//! ```text
//! cluster-slurm --config cluster-slurm.json --workspace /path/to/project mcp
//! ```

use crate::bindings::exports::openclaw::cluster_slurm::tool::ToolError;
use crate::bindings::{host_error_parts, host_error_text};
use crate::runtime::Runtime;
use anyhow::{Context, Result};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::sync::Arc;

/// What kind of failure a tool error is, for agents that branch on it.
pub fn tool_error_kind(e: &ToolError) -> &'static str {
    match e {
        ToolError::InvalidConfig(_) => "invalid-config",
        ToolError::InvalidRequest(_) => "invalid-request",
        ToolError::Policy(_) => "policy",
        ToolError::RemoteFailed(_) => "remote-failed",
        ToolError::Host(h) => host_error_parts(h).0,
    }
}

/// The message of a tool error, as a person should read it.
pub fn tool_error_text(e: &ToolError) -> String {
    match e {
        ToolError::InvalidConfig(m) => format!("invalid config: {m}"),
        ToolError::InvalidRequest(m) => format!("invalid request: {m}"),
        ToolError::Policy(m) => format!("refused by policy: {m}"),
        ToolError::Host(h) => host_error_text(h),
        ToolError::RemoteFailed(m) => format!("remote command failed: {m}"),
    }
}

pub struct McpServer {
    runtime: Arc<Runtime>,
    config_json: String,
    tool: Tool,
}

impl McpServer {
    /// Describe the tool through the guest, so MCP clients see exactly the
    /// schema the guest validates against.
    pub async fn new(runtime: Arc<Runtime>, config_json: String) -> Result<McpServer> {
        let d = runtime.describe().await?;
        let schema: JsonObject = serde_json::from_str(&d.parameters_schema)
            .context("the guest's parameter schema is not a JSON object")?;
        let mut tool = Tool::new(d.name, d.description, Arc::new(schema));
        tool.title = Some(d.label);
        // Every result is a JSON object (its fields depend on the action).
        let output: JsonObject =
            serde_json::from_value(json!({"type": "object"})).context("output schema")?;
        tool.output_schema = Some(Arc::new(output));
        let mut annotations = ToolAnnotations::default();
        annotations.destructive_hint = Some(true);
        annotations.open_world_hint = Some(true);
        tool.annotations = Some(annotations);
        Ok(McpServer {
            runtime,
            config_json,
            tool,
        })
    }

    /// Serve MCP on stdin/stdout until the client goes away.
    pub async fn serve_stdio(self) -> Result<()> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| anyhow::anyhow!("MCP initialisation failed: {e}"))?;
        running.waiting().await.context("MCP session")?;
        Ok(())
    }

    async fn run(&self, arguments: Option<JsonObject>) -> Result<CallToolResult, ErrorData> {
        let request = Value::Object(arguments.unwrap_or_default()).to_string();
        let answer = self
            .runtime
            .invoke(&self.config_json, &request)
            .await
            .map_err(|e| {
                ErrorData::internal_error(format!("cluster-slurm host error: {e:#}"), None)
            })?;
        Ok(match answer {
            Ok(text) => {
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    ErrorData::internal_error(format!("the guest returned invalid JSON: {e}"), None)
                })?;
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                result.structured_content = Some(value);
                result
            }
            Err(e) => {
                let message = tool_error_text(&e);
                let mut result = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
                result.structured_content =
                    Some(json!({"status": "error", "kind": tool_error_kind(&e), "error": message}));
                result
            }
        })
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("cluster-slurm", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Run SLURM jobs on the configured clusters with the cluster_slurm tool: list_clusters, then \
                 run_workload -> check_workload -> fetch_workload_logs -> download_workload_outputs.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult {
            tools: vec![self.tool.clone()],
            ..ListToolsResult::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != self.tool.name {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {:?} (this server has {:?})",
                    request.name, self.tool.name
                ),
                None,
            ));
        }
        self.run(request.arguments)
            .await
            .map(CallToolResponse::from)
    }
}
