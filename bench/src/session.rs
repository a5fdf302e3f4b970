//! A 100-call agent session through `cluster-slurm mcp` (one host process,
//! as an agent runtime keeps it), with the SSH connections counted by a
//! proxy in front of sshd.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct McpSession {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl McpSession {
    pub async fn start(bin: &Path, config: &Path, workspace: &Path) -> Result<McpSession> {
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("--workspace")
            .arg(workspace)
            .arg("mcp")
            .env("CLUSTER_SLURM_AUDIT_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting cluster-slurm mcp")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut s = McpSession {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        s.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "cluster-slurm-bench", "version": "1"}}),
        )
        .await?;
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(s)
    }

    async fn send(&mut self, message: &Value) -> Result<()> {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        while let Some(line) = self.stdout.next_line().await? {
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if message.get("id") == Some(&json!(id)) {
                if let Some(error) = message.get("error") {
                    bail!("{method}: {error}");
                }
                return Ok(message.get("result").cloned().unwrap_or(Value::Null));
            }
        }
        bail!("the MCP server ended before answering {method}")
    }

    /// One `cluster_slurm` tool call; its structured result.
    pub async fn tool(&mut self, arguments: Value) -> Result<Value> {
        let result = self
            .request(
                "tools/call",
                json!({"name": "cluster_slurm", "arguments": arguments}),
            )
            .await?;
        if result.get("isError") == Some(&json!(true)) {
            bail!("tool error: {result}");
        }
        Ok(result
            .get("structuredContent")
            .cloned()
            .unwrap_or(Value::Null))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
