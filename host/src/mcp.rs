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
//! Every line the client sends is answered or delivered, malformed ones
//! included ([`crate::mcp_stdio`], [`crate::mcp_request`]; limits in
//! docs/mcp.md, "Malformed input and limits").
//!
//! ```text
//! cluster-slurm --config cluster-slurm.json --workspace /path/to/project mcp
//! ```

use crate::bindings::exports::openclaw::cluster_slurm::tool::ToolError;
use crate::bindings::{host_error_parts, host_error_text};
use crate::mcp_stdio::LineTransport;
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
use tokio::io::{AsyncRead, AsyncWrite};

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
        serve_lines(self, tokio::io::stdin(), tokio::io::stdout()).await
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

/// Serve an MCP handler over a reader and a writer (stdin and stdout, or
/// in-memory pipes in tests) until the reader ends.
pub async fn serve_lines<H, R, W>(handler: H, read: R, write: W) -> Result<()>
where
    H: ServerHandler,
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let running = handler
        .serve(LineTransport::new(read, write))
        .await
        .map_err(|e| anyhow::anyhow!("MCP initialisation failed: {e}"))?;
    running.waiting().await.context("MCP session")?;
    Ok(())
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

/// The server loop over in-memory pipes, with a stand-in handler: every
/// class of malformed line gets its JSON-RPC error, and the next request is
/// still answered.
///
/// Negative control for the whole module: with `serve_lines` on rmcp's own
/// transport (`handler.serve((read, write))`, the code before this fix) all
/// nine fail. Seen: invalid UTF-8, garbage, 100,000 `[`, the 20/100 MB lines
/// and the exactly-16-MiB request time out ("no reply within 60 s"); a
/// notification before initialize closes stdout (session ended); a missing
/// method is answered with id null instead of 7; a batch gets a bare
/// "Invalid request" not naming batches; bad tools/call params get -32601
/// "method not found".
#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp_request::{INVALID_PARAMS, INVALID_REQUEST, MAX_NESTING, PARSE_ERROR};
    use crate::mcp_stdio::MAX_REQUEST_BYTES;
    use crate::mcp_stdio::filler::Filler;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};

    struct Probe;

    impl ServerHandler for Probe {
        fn get_info(&self) -> InitializeResult {
            InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
        }

        async fn list_tools(
            &self,
            _request: Option<PaginatedRequestParams>,
            _context: RequestContext<RoleServer>,
        ) -> Result<ListToolsResult, ErrorData> {
            Ok(ListToolsResult {
                tools: vec![Tool::new(
                    "probe",
                    "a test tool",
                    Arc::new(JsonObject::new()),
                )],
                ..ListToolsResult::default()
            })
        }
    }

    struct Client {
        stdin: DuplexStream,
        stdout: Lines<BufReader<DuplexStream>>,
        next_id: i64,
    }

    impl Client {
        async fn start() -> Client {
            let (stdin, server_in) = tokio::io::duplex(64 * 1024);
            let (server_out, stdout) = tokio::io::duplex(64 * 1024);
            tokio::spawn(serve_lines(Probe, server_in, server_out));
            Client {
                stdin,
                stdout: BufReader::new(stdout).lines(),
                next_id: 100,
            }
        }

        async fn initialized() -> Client {
            let mut client = Client::start().await;
            client.initialize().await;
            client
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.stdin.write_all(bytes).await.unwrap();
        }

        /// Stream `prefix`, then `len` filler bytes, then `suffix` and a
        /// newline, without the line ever being in memory.
        async fn send_huge(&mut self, prefix: &[u8], len: u64, suffix: &[u8]) {
            self.send(prefix).await;
            let mut tail = suffix.to_vec();
            tail.push(b'\n');
            let mut filler = Filler {
                len,
                byte: b'a',
                tail,
            };
            tokio::io::copy(&mut filler, &mut self.stdin).await.unwrap();
        }

        /// The next line on stdout, which must be one JSON object.
        async fn recv(&mut self) -> Value {
            let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
                .await
                .expect("no reply within 60 s")
                .unwrap()
                .expect("the server closed stdout");
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line:.200}"));
            assert!(value.is_object(), "{line:.200}");
            value
        }

        async fn initialize(&mut self) {
            self.send(
                br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}
"#,
            )
            .await;
            let r = self.recv().await;
            assert_eq!(r["id"], 0, "{r}");
            assert!(r["result"]["serverInfo"].is_object(), "{r}");
            self.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
                .await;
        }

        /// The next reply is a JSON-RPC error with this code and id; its message.
        async fn expect_error(&mut self, code: i64, id: Value) -> String {
            let r = self.recv().await;
            assert_eq!(r["jsonrpc"], "2.0", "{r}");
            assert_eq!(r["error"]["code"], code, "{r}");
            assert_eq!(r["id"], id, "{r}");
            r["error"]["message"].as_str().unwrap().to_string()
        }

        /// A tools/list is answered: the server kept serving.
        async fn still_serving(&mut self) {
            self.next_id += 1;
            let id = self.next_id;
            self.send(
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/list\"}}\n")
                    .as_bytes(),
            )
            .await;
            let r = self.recv().await;
            assert_eq!(r["id"], id, "{r}");
            assert_eq!(r["result"]["tools"][0]["name"], "probe", "{r}");
        }
    }

    /// Control (the UTF-8 check replaced by a lossy decode): the request is
    /// answered as a tools/list. Seen: a result for id 1, not -32700.
    #[tokio::test]
    async fn invalid_utf8_is_a_parse_error() {
        let mut c = Client::initialized().await;
        c.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"x\":\"\xff\xfe\"}\n")
            .await;
        let m = c.expect_error(PARSE_ERROR, Value::Null).await;
        assert!(m.contains("UTF-8"), "{m}");
        c.send(b"\xc3\x28\n").await;
        c.expect_error(PARSE_ERROR, Value::Null).await;
        c.still_serving().await;
    }

    #[tokio::test]
    async fn garbage_is_a_parse_error_even_before_initialize() {
        let mut c = Client::start().await;
        c.send(b"hello, server\n").await;
        c.expect_error(PARSE_ERROR, Value::Null).await;
        c.initialize().await;
        for garbage in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\n"[..],
            b"}{\n",
            b"\x00\x01\x02\n",
            b"{\"id\":1}{\"id\":2}\n",
        ] {
            c.send(garbage).await;
            c.expect_error(PARSE_ERROR, Value::Null).await;
        }
        c.still_serving().await;
    }

    #[tokio::test]
    async fn a_batch_or_a_bare_value_is_an_invalid_request() {
        let mut c = Client::initialized().await;
        c.send(b"[{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/list\"}]\n")
            .await;
        let m = c.expect_error(INVALID_REQUEST, Value::Null).await;
        assert!(m.contains("batch"), "{m}");
        for line in [&b"[]\n"[..], b"42\n", b"\"tools/list\"\n", b"null\n"] {
            c.send(line).await;
            c.expect_error(INVALID_REQUEST, Value::Null).await;
        }
        c.still_serving().await;
    }

    #[tokio::test]
    async fn missing_method_or_wrong_version_is_an_invalid_request_with_its_id() {
        let mut c = Client::initialized().await;
        c.send(b"{\"jsonrpc\":\"2.0\",\"id\":7}\n").await;
        let m = c.expect_error(INVALID_REQUEST, json!(7)).await;
        assert!(m.contains("method"), "{m}");
        c.send(b"{\"jsonrpc\":\"1.0\",\"id\":\"eight\",\"method\":\"tools/list\"}\n")
            .await;
        c.expect_error(INVALID_REQUEST, json!("eight")).await;
        c.send(b"{\"id\":9,\"method\":\"tools/list\"}\n").await;
        c.expect_error(INVALID_REQUEST, json!(9)).await;
        c.send(b"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":[\"tools/list\"]}\n")
            .await;
        c.expect_error(INVALID_REQUEST, json!(10)).await;
        // No usable id: answered with null (JSON-RPC 2.0 §5).
        c.send(b"{\"foo\":\"boo\"}\n").await;
        c.expect_error(INVALID_REQUEST, Value::Null).await;
        c.still_serving().await;
    }

    #[tokio::test]
    async fn bad_params_are_invalid_params_and_malformed_notifications_get_no_reply() {
        let mut c = Client::initialized().await;
        c.send(
            b"{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"tools/call\",\"params\":{\"name\":5}}\n",
        )
        .await;
        c.expect_error(INVALID_PARAMS, json!(11)).await;
        c.send(b"{\"jsonrpc\":\"2.0\",\"id\":15,\"method\":\"no/such/method\"}\n")
            .await;
        c.expect_error(-32601, json!(15)).await;
        // A notification with bad params: nothing comes back, so the next
        // reply is the tools/list answer.
        c.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":{}}}\n")
            .await;
        c.still_serving().await;
    }

    #[tokio::test]
    async fn a_notification_or_response_before_initialize_does_not_end_the_session() {
        // Control: rmcp ends the session on either (it expects initialize
        // first); with the `initialized` checks removed from mcp_request,
        // `initialize` below gets no answer. Seen: "the server closed
        // stdout".
        let mut c = Client::start().await;
        c.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .await;
        c.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n")
            .await;
        c.initialize().await;
        c.still_serving().await;
    }

    #[tokio::test]
    async fn nesting_over_the_limit_is_an_invalid_request() {
        let mut c = Client::initialized().await;
        // 100,000 `[`: refused by the count, before any parser recurses.
        // Control (nested_deeper_than always false): serde_json's own
        // recursion limit answers -32700, not -32600. Seen: -32700
        // "recursion limit exceeded at line 1 column 128".
        let mut deep = vec![b'['; 100_000];
        deep.push(b'\n');
        c.send(&deep).await;
        let m = c.expect_error(INVALID_REQUEST, Value::Null).await;
        assert!(m.contains(&MAX_NESTING.to_string()), "{m}");

        // A real request at exactly the limit is answered; one level more
        // is refused. (Request object, params and "x" are three levels.)
        let request = |levels: usize| {
            let inner = levels - 3;
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"tools/list\",\"params\":{{\"x\":{{\"y\":{}1{}}}}}}}\n",
                "[".repeat(inner),
                "]".repeat(inner)
            )
        };
        c.send(request(MAX_NESTING).as_bytes()).await;
        let r = c.recv().await;
        assert_eq!(r["result"]["tools"][0]["name"], "probe", "{r}");
        // Control (guard removed): this one is answered with the tool list.
        // Seen: a result for id 12.
        c.send(request(MAX_NESTING + 1).as_bytes()).await;
        c.expect_error(INVALID_REQUEST, Value::Null).await;
        c.still_serving().await;
    }

    #[tokio::test]
    async fn lines_of_20_and_100_mb_are_refused_and_the_server_keeps_serving() {
        let mut c = Client::initialized().await;
        // A well-formed request, 20 MB long: its id cannot be known without
        // reading it all, so the answer has id null.
        c.send_huge(
            b"{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"tools/list\",\"params\":{\"x\":\"",
            20_000_000,
            b"\"}}",
        )
        .await;
        let m = c.expect_error(INVALID_REQUEST, Value::Null).await;
        assert!(
            m.contains("16 MiB") && m.contains(&MAX_REQUEST_BYTES.to_string()),
            "{m}"
        );
        c.still_serving().await;
        // 100 MB of garbage.
        c.send_huge(b"", 100_000_000, b"").await;
        c.expect_error(INVALID_REQUEST, Value::Null).await;
        c.still_serving().await;
        // Control (the length check in BoundedLines::next removed): the
        // 20 MB request is read whole and answered with the tool list. Seen:
        // a result for id 13 (and the request one byte over the limit in
        // the next test answered too).
    }

    #[tokio::test]
    async fn a_request_just_under_the_limit_is_answered() {
        let mut c = Client::initialized().await;
        let prefix =
            b"{\"jsonrpc\":\"2.0\",\"id\":14,\"method\":\"tools/list\",\"params\":{\"x\":\"";
        let suffix = b"\"}}";
        let fill = MAX_REQUEST_BYTES - prefix.len() - suffix.len();
        c.send_huge(prefix, fill as u64, suffix).await;
        let r = c.recv().await;
        assert_eq!(r["id"], 14, "{r}");
        assert_eq!(r["result"]["tools"][0]["name"], "probe", "{r}");
        // One byte more is refused.
        c.send_huge(prefix, fill as u64 + 1, suffix).await;
        c.expect_error(INVALID_REQUEST, Value::Null).await;
        c.still_serving().await;
    }
}
