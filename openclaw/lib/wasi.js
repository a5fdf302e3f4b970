// The few WASI 0.2 imports the guest links through the Rust standard library
// (clocks, random, stdio streams), written here rather than taken from
// @bytecodealliance/preview2-shim: that shim starts a worker thread from a
// file OpenClaw's plugin capture does not copy, hands the guest the
// gateway's environment, and its `exit` would end the gateway process.
//
// What the guest gets: an empty environment, no arguments, no stdin, its
// stdout and stderr both on the host's stderr (diagnostics only; results
// travel as return values), monotonic and wall clocks, random numbers.

import crypto from "node:crypto";
import fs from "node:fs";

class IoError {
  constructor(message) {
    this.message = message;
  }
  toDebugString() {
    return this.message;
  }
}

/** Everything here completes synchronously, so every pollable is ready. */
class Pollable {
  ready() {
    return true;
  }
  block() {}
}

class InputStream {
  read() {
    throw { tag: "closed" };
  }
  blockingRead() {
    throw { tag: "closed" };
  }
  skip() {
    throw { tag: "closed" };
  }
  blockingSkip() {
    throw { tag: "closed" };
  }
  subscribe() {
    return new Pollable();
  }
}

const WRITE_BUDGET = 1n << 20n;

class OutputStream {
  constructor(fd) {
    this.fd = fd;
  }
  checkWrite() {
    return WRITE_BUDGET;
  }
  write(contents) {
    try {
      fs.writeSync(this.fd, contents);
    } catch (e) {
      throw { tag: "last-operation-failed", val: new IoError(String(e?.message ?? e)) };
    }
  }
  blockingWriteAndFlush(contents) {
    this.write(contents);
  }
  flush() {}
  blockingFlush() {}
  writeZeroes(n) {
    this.write(new Uint8Array(Number(n)));
  }
  blockingWriteZeroesAndFlush(n) {
    this.writeZeroes(n);
  }
  subscribe() {
    return new Pollable();
  }
}

class TerminalInput {}
class TerminalOutput {}

const STDERR = 2;

export const WASI_IMPORTS = {
  "wasi:cli/environment": {
    getEnvironment: () => [],
    getArguments: () => [],
    initialCwd: () => undefined,
  },
  "wasi:cli/exit": {
    // The guest never exits on purpose; ending the gateway is not its call.
    exit(status) {
      throw new Error(`the guest called exit(${status?.tag ?? status})`);
    },
  },
  "wasi:cli/stdin": { getStdin: () => new InputStream() },
  "wasi:cli/stdout": { getStdout: () => new OutputStream(STDERR) },
  "wasi:cli/stderr": { getStderr: () => new OutputStream(STDERR) },
  "wasi:cli/terminal-input": { TerminalInput },
  "wasi:cli/terminal-output": { TerminalOutput },
  "wasi:cli/terminal-stdin": { getTerminalStdin: () => undefined },
  "wasi:cli/terminal-stdout": { getTerminalStdout: () => undefined },
  "wasi:cli/terminal-stderr": { getTerminalStderr: () => undefined },
  "wasi:clocks/monotonic-clock": {
    now: () => process.hrtime.bigint(),
    resolution: () => 1n,
    subscribeInstant: () => new Pollable(),
    subscribeDuration: () => new Pollable(),
  },
  "wasi:clocks/wall-clock": {
    now() {
      const ns = BigInt(Date.now()) * 1_000_000n;
      return { seconds: ns / 1_000_000_000n, nanoseconds: Number(ns % 1_000_000_000n) };
    },
    resolution: () => ({ seconds: 0n, nanoseconds: 1_000_000 }),
  },
  "wasi:io/error": { Error: IoError },
  "wasi:io/poll": { Pollable, poll: (list) => new Uint32Array(list.map((_, i) => i)) },
  "wasi:io/streams": { InputStream, OutputStream },
  "wasi:random/random": {
    getRandomBytes: (n) => new Uint8Array(crypto.randomBytes(Number(n))),
    getRandomU64: () => crypto.randomBytes(8).readBigUInt64LE(),
  },
  "wasi:random/insecure-seed": {
    insecureSeed() {
      const b = crypto.randomBytes(16);
      return [b.readBigUInt64LE(0), b.readBigUInt64LE(8)];
    },
  },
};
