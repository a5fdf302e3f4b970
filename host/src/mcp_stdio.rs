//! The stdio transport of `cluster-slurm mcp`: one JSON-RPC message per
//! line, and every line the client sends either reaches the MCP service or
//! is answered with a JSON-RPC error (see [`crate::mcp_request`]), so a
//! client never waits for a reply that will not come.
//!
//! rmcp's own stdio transport drops a line it cannot parse, or one over its
//! length cap, without a word; that is why this one exists. Here:
//!
//! - stdin is read as bytes, at most [`MAX_REQUEST_BYTES`] per line. A longer
//!   line is consumed as it streams by, up to its newline, without being
//!   held, and then answered with an Invalid Request naming the limit.
//! - stdout is written only by one task, one whole line at a time, and only
//!   with serialized JSON-RPC messages (serde_json never puts a raw newline
//!   in its output), so replies and errors cannot interleave.
//!
//! Cancellation: rmcp polls `receive` in a `select!`, so it may be dropped at
//! any await. The partial line lives in [`BoundedLines`], and an error reply
//! waits in `reply` until the writer queue has room for it; neither is lost.

use crate::mcp_request::{Verdict, is_initialize, judge, too_long};
use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::Value;
use std::io;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The longest request line accepted, in bytes (without its newline). The
/// same cap as rmcp's HTTP transports; a tool call's arguments are a few KiB.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Lines waiting for stdout. A client that sends and never reads fills the
/// pipe, then this queue, and then its own requests stop being read: memory
/// stays bounded.
const QUEUE: usize = 64;

/// After a big request the line buffer shrinks back to this.
const KEPT_CAPACITY: usize = 64 * 1024;

/// The end of one `next` call.
#[derive(Debug)]
pub enum Line {
    /// A whole line (or the input's last, unterminated one) is in the buffer.
    Complete,
    /// The line was over the limit; it has been read to its end and dropped.
    TooLong,
    Eof,
    Failed(io::Error),
}

/// Lines of at most `max` bytes from a byte stream.
pub struct BoundedLines<R> {
    read: BufReader<R>,
    line: Vec<u8>,
    max: usize,
    /// Inside a line already found too long: skip to its newline.
    discarding: bool,
}

impl<R: AsyncRead + Unpin> BoundedLines<R> {
    pub fn new(read: R, max: usize) -> Self {
        BoundedLines {
            read: BufReader::new(read),
            line: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Read on to the end of the next line. Never holds more than `max`
    /// bytes of it plus one read buffer (`fill_buf`/`consume`, not
    /// `read_until`, which would buffer the whole line before its length
    /// could be checked).
    pub async fn next(&mut self) -> Line {
        loop {
            let (used, ended) = {
                let available = match self.read.fill_buf().await {
                    Ok(available) => available,
                    Err(e) => return Line::Failed(e),
                };
                if available.is_empty() {
                    // End of input. A last line without its newline is still
                    // a request and gets its answer.
                    if std::mem::take(&mut self.discarding) {
                        return Line::TooLong;
                    }
                    return if self.line.is_empty() {
                        Line::Eof
                    } else {
                        Line::Complete
                    };
                }
                let newline = available.iter().position(|b| *b == b'\n');
                let body = newline.unwrap_or(available.len());
                if !self.discarding {
                    if self.line.len().saturating_add(body) > self.max {
                        self.discarding = true;
                        self.clear();
                    } else {
                        self.line
                            .extend_from_slice(available.get(..body).unwrap_or_default());
                    }
                }
                (newline.map_or(body, |at| at + 1), newline.is_some())
            };
            // No await between looking at the bytes and consuming them: a
            // cancelled call leaves the stream and `line` consistent.
            self.read.consume(used);
            if ended {
                return if std::mem::take(&mut self.discarding) {
                    Line::TooLong
                } else {
                    Line::Complete
                };
            }
        }
    }

    /// The line `next` completed.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// Forget the current line (and most of the memory a big one took).
    pub fn clear(&mut self) {
        self.line.clear();
        self.line.shrink_to(KEPT_CAPACITY);
    }

    /// Bytes held for the current line (for tests of the bound).
    pub fn held(&self) -> usize {
        self.line.capacity()
    }
}

/// One line for stdout, and who wants to know it was written.
struct Outgoing {
    line: Vec<u8>,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// The only writer of stdout.
async fn write_lines<W: AsyncWrite + Unpin>(mut out: W, mut queue: mpsc::Receiver<Outgoing>) {
    while let Some(next) = queue.recv().await {
        let written = match out.write_all(&next.line).await {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        let failed = written.is_err();
        if let Some(done) = next.done {
            // The sender may have stopped waiting; the line is out either way.
            let _ = done.send(written);
        }
        if failed {
            // The client is gone; closing the queue ends the session.
            return;
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the MCP output is closed")
}

fn as_line(value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    Ok(line)
}

/// The MCP server's transport over a reader and a writer (stdin and stdout,
/// or in-memory pipes in tests).
pub struct LineTransport<R> {
    lines: BoundedLines<R>,
    out: Option<mpsc::Sender<Outgoing>>,
    writer: Option<JoinHandle<()>>,
    /// An error reply not yet handed to the writer.
    reply: Option<Vec<u8>>,
    initialized: bool,
}

impl<R: AsyncRead + Unpin> LineTransport<R> {
    /// Must be called inside a tokio runtime (it starts the writer task).
    pub fn new<W: AsyncWrite + Send + Unpin + 'static>(read: R, write: W) -> Self {
        Self::with_limit(read, write, MAX_REQUEST_BYTES)
    }

    pub fn with_limit<W: AsyncWrite + Send + Unpin + 'static>(
        read: R,
        write: W,
        max: usize,
    ) -> Self {
        let (out, queue) = mpsc::channel(QUEUE);
        LineTransport {
            lines: BoundedLines::new(read, max),
            out: Some(out),
            writer: Some(tokio::spawn(write_lines(write, queue))),
            reply: None,
            initialized: false,
        }
    }

    fn verdict(&mut self, line: Line) -> Option<Verdict> {
        match line {
            Line::Complete => {
                let verdict = judge(self.lines.line(), self.initialized);
                self.lines.clear();
                Some(verdict)
            }
            Line::TooLong => Some(Verdict::Reply(too_long(self.lines.max))),
            Line::Eof => None,
            Line::Failed(e) => {
                eprintln!("cluster-slurm mcp: cannot read stdin: {e}");
                None
            }
        }
    }

    fn queue_reply(&mut self, reply: &Value) {
        match as_line(reply) {
            Ok(line) => self.reply = Some(line),
            Err(e) => eprintln!("cluster-slurm mcp: cannot encode an error reply: {e}"),
        }
    }
}

impl<R: AsyncRead + Send + Unpin> Transport<RoleServer> for LineTransport<R> {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.out.clone();
        let line = as_line(&item);
        async move {
            let line = line?;
            let out = out.ok_or_else(closed)?;
            let (done, written) = oneshot::channel();
            out.send(Outgoing {
                line,
                done: Some(done),
            })
            .await
            .map_err(|_| closed())?;
            written.await.map_err(|_| closed())?
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            if self.reply.is_some() {
                // Reserve first, take the reply only once there is room: a
                // cancelled wait keeps it for the next call.
                let permit = self.out.as_ref()?.reserve().await.ok()?;
                if let Some(line) = self.reply.take() {
                    permit.send(Outgoing { line, done: None });
                }
            }
            let line = self.lines.next().await;
            match self.verdict(line)? {
                Verdict::Deliver(message) => {
                    if is_initialize(&message) {
                        self.initialized = true;
                    }
                    return Some(*message);
                }
                Verdict::Reply(reply) => self.queue_reply(&reply),
                Verdict::Drop(why) => eprintln!("cluster-slurm mcp: {why}"),
                Verdict::Blank => {}
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // Closing the queue lets the writer finish what is in it, then end.
        drop(self.out.take());
        if let Some(writer) = self.writer.take() {
            writer.await.map_err(io::Error::other)?;
        }
        Ok(())
    }
}

/// `len` bytes of `byte`, then `tail`: a huge line for tests that never
/// exists in memory.
#[cfg(test)]
pub(crate) mod filler {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, ReadBuf};

    pub(crate) struct Filler {
        pub len: u64,
        pub byte: u8,
        pub tail: Vec<u8>,
    }

    impl AsyncRead for Filler {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.len > 0 {
                let n = (buf.remaining() as u64).min(self.len) as usize;
                buf.put_slice(&vec![self.byte; n]);
                self.len -= n as u64;
            } else {
                let n = buf.remaining().min(self.tail.len());
                let rest = self.tail.split_off(n);
                buf.put_slice(&self.tail);
                self.tail = rest;
            }
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filler::Filler;
    use super::*;

    #[tokio::test]
    async fn a_100_mb_line_is_dropped_without_being_held() {
        let mut lines = BoundedLines::new(
            Filler {
                len: 100 * 1024 * 1024,
                byte: b'x',
                tail: b"\n{\"next\":1}\n".to_vec(),
            },
            MAX_REQUEST_BYTES,
        );
        assert!(matches!(lines.next().await, Line::TooLong));
        // Control (the length check removed): `next` returns Complete
        // holding the whole line. Seen: Complete, 134,217,728 bytes held.
        assert!(lines.held() <= MAX_REQUEST_BYTES, "{}", lines.held());
        assert!(matches!(lines.next().await, Line::Complete));
        assert_eq!(lines.line(), b"{\"next\":1}");
        lines.clear();
        assert!(matches!(lines.next().await, Line::Eof));
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_kept_and_a_last_unterminated_line_counts() {
        let mut lines = BoundedLines::new(&b"12345\n123456\nabc"[..], 5);
        assert!(matches!(lines.next().await, Line::Complete));
        assert_eq!(lines.line(), b"12345");
        lines.clear();
        assert!(matches!(lines.next().await, Line::TooLong));
        assert!(matches!(lines.next().await, Line::Complete));
        assert_eq!(lines.line(), b"abc");
        lines.clear();
        assert!(matches!(lines.next().await, Line::Eof));
        // Over the limit and cut off by the end of input: still answered.
        let mut lines = BoundedLines::new(&b"123456"[..], 5);
        assert!(matches!(lines.next().await, Line::TooLong));
        assert!(matches!(lines.next().await, Line::Eof));
    }
}
