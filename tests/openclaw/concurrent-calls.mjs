// Run N tool calls at once through the OpenClaw entry's host (the same code
// OpenClaw runs in its process), without OpenClaw: for tests that need many
// simultaneous calls. Prints the calls' `details` as one JSON array.
//
//   node concurrent-calls.mjs CONFIG.json WORKSPACE N 'REQUEST-JSON'

import fs from "node:fs";
import { runTool } from "../../openclaw/index.js";

const [configFile, workspace, n, request] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configFile, "utf8"));
const calls = Array.from({ length: Number(n) }, () => runTool(config, workspace, JSON.parse(request)));
const results = await Promise.all(calls);
process.stdout.write(`${JSON.stringify(results.map((r) => r.details))}\n`);
