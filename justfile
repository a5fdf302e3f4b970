# Recipes; `./dev RECIPE` installs the tools first (see README).
set shell := ["bash", "-euo", "pipefail", "-c"]

bin := "target/release/cluster-slurm"

# Build, start the testbed and run the quickstart workload.
default: demo

# The guest component (wasm32-wasip2, optimised for speed: it runs on every call), and the hostile test
# guest the host's sandbox tests load in its place.
guest:
    cargo build -p cluster-slurm-guest -p hostile-guest --target wasm32-wasip2 --profile guest

# One build for `demo` and `test` alike: `--all-targets` resolves features the
# way the test run does, so nextest reuses these artifacts (and this binary)
# instead of compiling wasmtime a second time.
# The host binary (guest embedded) and every test target.
build: guest
    cargo build --release --workspace --all-targets

# Start the local SLURM + sshd testbed; prints its config path last.
testbed-up:
    tests/testbed/up.sh

# Stop exactly what testbed-up started.
testbed-down:
    tests/testbed/down.sh

# The main job: a real workload through the wasm guest on the local testbed.
demo: build
    examples/quickstart/run.sh "$(tests/testbed/up.sh | tail -1)"

# Lints, guest policy (native), host capabilities, MCP conformance, the
# plugin inside the real OpenClaw, end to end on the testbed.
# Every test, ending with nextest's summary.
test: lint mcp-client build plugin openclaw-host
    CLUSTER_SLURM_TESTBED_CONFIG="$(tests/testbed/up.sh | tail -1)" CLUSTER_SLURM_BIN="$PWD/{{bin}}" \
        CLUSTER_SLURM_STATE_DIR="$(mktemp -d /tmp/cluster-slurm-state.XXXXXX)" \
        cargo nextest run --release --workspace --no-fail-fast

# The OpenClaw plugin in openclaw/: the guest transpiled by jco (Node 24 and
# jco are installed under target/node-tools on first use).
plugin: guest
    openclaw/build.sh target/wasm32-wasip2/guest/cluster_slurm_guest.wasm

# The real openclaw npm package (pinned) for the tests, under target/openclaw-host.
openclaw-host: plugin
    tests/openclaw/install.sh >/dev/null

# The Python MCP SDK, as an independent client for the MCP conformance test.
mcp-client:
    test -x target/mcp-client/bin/python || python3 -m venv target/mcp-client
    target/mcp-client/bin/python -c 'import mcp' 2>/dev/null || target/mcp-client/bin/pip install --quiet 'mcp==2.3.0'

# The benchmark suite: our host against OpenSSH and the reference's way, on
# the local testbed; writes BENCHMARKS.md (`just bench --quick` for a short run).
bench *args: build
    target/release/cluster-slurm-bench --config "$(tests/testbed/up.sh | tail -1)" {{args}}

# Random and hostile input through the whole guest: 2,000,000 random cases
# (4,000,000 calls) and the injection corpus; prints the counts.
fuzz iterations="2000000":
    FUZZ_ITERATIONS={{iterations}} cargo test --release -p cluster-slurm-guest fuzz_tests -- --nocapture

# Formatting and lints (unwrap/expect/panic/indexing are denied outside tests).
lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings
    cargo clippy -p cluster-slurm-guest -p hostile-guest --target wasm32-wasip2 --profile guest -- -D warnings

# What the guest imports and exports, and what this host grants it.
audit config=`tests/testbed/up.sh | tail -1`:
    {{bin}} --config "{{config}}" audit
