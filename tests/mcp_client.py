"""MCP conformance scenario, driven by the official Python MCP SDK (a client we
did not write) against `cluster-slurm mcp` on the real testbed.

Usage: mcp_client.py BINARY CONFIG WORKSPACE
Prints one JSON report on stdout; the Rust test (tests/e2e_mcp.rs) checks it.
"""
import asyncio
import json
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def as_dict(result):
    """The parts of a CallToolResult the test looks at."""
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {"isError": bool(result.is_error), "text": texts, "structured": result.structured_content}


async def main(binary, config, workspace):
    report = {}
    server = StdioServerParameters(command=binary, args=["--config", config, "--workspace", workspace, "mcp"])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            report["serverName"] = init.server_info.name
            report["hasToolsCapability"] = init.capabilities.tools is not None

            tools = (await session.list_tools()).tools
            report["tools"] = [
                {"name": t.name, "inputSchema": t.input_schema, "outputSchema": t.output_schema} for t in tools
            ]

            report["listClusters"] = as_dict(await session.call_tool("cluster_slurm", {"action": "list_clusters"}))

            run = as_dict(await session.call_tool("cluster_slurm", {
                "action": "run_workload",
                "prefix": "mcp",
                "command": "python3 job.py",
                "localPaths": ["job.py", "data/in.txt"],
            }))
            report["run"] = run
            run_id = run["structured"]["runId"]

            deadline = time.monotonic() + 180
            while True:
                status = as_dict(await session.call_tool("cluster_slurm", {"action": "check_workload", "runId": run_id}))
                if status["structured"].get("done") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            report["status"] = status

            report["logs"] = as_dict(await session.call_tool("cluster_slurm", {"action": "fetch_workload_logs", "runId": run_id}))
            report["download"] = as_dict(await session.call_tool(
                "cluster_slurm", {"action": "download_workload_outputs", "runId": run_id, "remoteFile": "out.txt"}))
            report["invalid"] = as_dict(await session.call_tool("cluster_slurm", {"action": "launch_rockets"}))
            report["policy"] = as_dict(await session.call_tool(
                "cluster_slurm", {"action": "run_workload", "command": "module load secret-env"}))
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
