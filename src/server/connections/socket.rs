//! The TCP stream, watched: when a head starts to arrive, and hyper's own error answers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{HEAD_BUFFER_BYTES, Tracked};
use crate::http::MAX_URI_BYTES;
use crate::http::problem::{Kind, PROBLEM_JSON, Problem};

/// The TCP stream, noting when a head starts to arrive and rewriting hyper's own error answers.
///
/// hyper answers a head it cannot parse (`400`), a request target over 64 KiB (`414`) or a head
/// over its buffer (`431`) itself, with an empty body, before the service sees the request. A
/// response head written on a connection that has had no more service calls than heads written
/// is one of those; it is replaced by the same status as problem+json, and the rest of hyper's
/// answer swallowed (hyper closes the connection after it).
pub(super) struct Watched {
    io: TcpStream,
    tracked: Arc<Tracked>,
    /// Final response heads written so far.
    heads: u64,
    rewrite: Rewrite,
}

enum Rewrite {
    No,
    Writing { bytes: Vec<u8>, at: usize },
    Done,
}

impl Watched {
    pub(super) fn new(io: TcpStream, tracked: Arc<Tracked>) -> Self {
        Self {
            io,
            tracked,
            heads: 0,
            rewrite: Rewrite::No,
        }
    }

    /// Whether `buf` starts a final response head, and if so whether hyper wrote it on its own.
    fn head(&self, buf: &[u8]) -> Option<bool> {
        let is_head = buf.len() > 12 && buf.starts_with(b"HTTP/1.1 ") && buf[9] != b'1';
        is_head.then(|| self.heads + 1 > self.tracked.calls.load(Ordering::Relaxed))
    }

    /// Starts the rewrite when `buf` is hyper's own answer; returns whether it did.
    fn start_rewrite(&mut self, buf: &[u8]) -> bool {
        if self.head(buf) != Some(true) {
            return false;
        }
        match own_answer(&buf[9..12]) {
            Some(bytes) => {
                self.rewrite = Rewrite::Writing { bytes, at: 0 };
                true
            }
            None => false,
        }
    }

    /// Writes the rewritten answer; `consumed` is what hyper is told was written.
    fn drive(&mut self, cx: &mut Context<'_>, consumed: usize) -> Poll<io::Result<usize>> {
        if let Rewrite::Writing { bytes, at } = &mut self.rewrite {
            while *at < bytes.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*at..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *at += n;
            }
            self.rewrite = Rewrite::Done;
        }
        Poll::Ready(Ok(consumed))
    }
}

/// hyper's `400`, `414` and `431` as problem+json, closing the connection.
fn own_answer(status: &[u8]) -> Option<Vec<u8>> {
    let (kind, detail) = match status {
        b"400" => (
            Kind::MalformedRequest,
            "the request is not valid HTTP/1.1".to_string(),
        ),
        b"414" => (
            Kind::UriTooLong,
            format!("the request target exceeds {MAX_URI_BYTES} bytes"),
        ),
        b"431" => (
            Kind::HeadersTooLarge,
            format!(
                "the request head exceeds {HEAD_BUFFER_BYTES} bytes or has more than 100 fields"
            ),
        ),
        _ => return None,
    };
    let problem = Problem::new(kind, detail);
    let status = problem.status();
    let json = problem.to_json();
    metrics::counter!("http_malformed_requests_total", "status" => status.as_str().to_owned())
        .increment(1);
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncache-control: no-store\r\n\
         x-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        json.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&json);
    Some(bytes)
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.tracked.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.rewrite {
            Rewrite::Done => return Poll::Ready(Ok(buf.len())),
            Rewrite::Writing { .. } => return self.drive(cx, buf.len()),
            Rewrite::No => {}
        }
        if self.start_rewrite(buf) {
            return self.drive(cx, buf.len());
        }
        let is_head = self.head(buf).is_some();
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        if is_head && n > 0 {
            self.heads += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        match self.rewrite {
            Rewrite::Done => return Poll::Ready(Ok(total)),
            Rewrite::Writing { .. } => return self.drive(cx, total),
            Rewrite::No => {}
        }
        let first: &[u8] = bufs.iter().find(|b| !b.is_empty()).map_or(&[], |b| b);
        if self.start_rewrite(first) {
            return self.drive(cx, total);
        }
        let is_head = self.head(first).is_some();
        let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs))?;
        if is_head && n > 0 {
            self.heads += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_answers_become_problems() {
        for (status, code) in [
            (&b"400"[..], "malformed-request"),
            (b"414", "uri-too-long"),
            (b"431", "headers-too-large"),
        ] {
            let bytes = own_answer(status).unwrap();
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with(&format!(
                "HTTP/1.1 {}",
                std::str::from_utf8(status).unwrap()
            )));
            assert!(text.contains("content-type: application/problem+json\r\n"));
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["code"], code);
        }
        assert!(own_answer(b"500").is_none());
    }
}
