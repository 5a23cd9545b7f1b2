//! Answers for request heads that hyper refuses itself (HTTP/1.1).
//!
//! A head that cannot be parsed, or breaks a head bound, never reaches a route: hyper answers
//! it on its own with 400, 414 or 431 and an empty body, then closes the connection. Clients of
//! a dialect would get no error in the format they parse. [`HeadErrors`] wraps each accepted
//! socket: it notes the request line of the head being read and, when hyper writes a refusal
//! of its own (a 4xx head without the `x-request-id` every routed answer carries), writes in
//! its place the error of the dialect owning the path ([`EdgeError::MalformedHead`] through the
//! route's renderer), or the server's own JSON error when the path is no route's, with the
//! bound that was broken. Nothing else on the wire changes: only a write that starts with an
//! HTTP/1.x status line is looked at, and no answer body of this server starts with one (they
//! are JSON, JPEG images, a PEM key and Knomi's encrypted packages).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::Method;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hooks::EdgeError;
use super::routes::Router;
use super::HttpResponse;

/// Most header fields of an HTTP/1.1 request head (hyper's bound, set explicitly).
pub const H1_MAX_HEADERS: usize = 100;
/// Most bytes of an HTTP/1.1 request head (hyper's read buffer, set explicitly).
pub const H1_MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Longest request target hyper accepts, bytes.
const H1_MAX_TARGET: usize = u16::MAX as usize - 1;
/// Most bytes of a request line kept to find the route of a refused head.
const LINE_MAX: usize = 8 << 10;

/// A socket whose hyper-made refusals are rewritten in the owning dialect's format.
pub struct HeadErrors<T> {
    /// The socket.
    inner: T,
    /// Who owns which path.
    router: Arc<Router>,
    /// The request line of the head being read (up to [`LINE_MAX`] bytes).
    line: Vec<u8>,
    /// Whether the bytes read now start a head: at the start, and after each final answer.
    capturing: bool,
    /// The answer written in place of hyper's, the bytes of it already out, and how many
    /// bytes of hyper's it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<T> HeadErrors<T> {
    /// Wraps an accepted socket.
    pub fn new(inner: T, router: Arc<Router>) -> Self {
        Self {
            inner,
            router,
            line: Vec::new(),
            capturing: true,
            replacing: None,
        }
    }

    /// Notes the bytes just read: the start of a head until its first line ends.
    fn saw_read(&mut self, bytes: &[u8]) {
        if !self.capturing {
            return;
        }
        let room = LINE_MAX - self.line.len();
        let end = bytes.iter().position(|&b| b == b'\n');
        let take = end.unwrap_or(bytes.len()).min(room);
        self.line.extend_from_slice(&bytes[..take]);
        if end.is_some() || self.line.len() >= LINE_MAX {
            self.capturing = false;
        }
    }

    /// What hyper is about to write, from its first buffer: `Some(status)` for a refusal of
    /// its own, which then stands replaced. A routed final answer starts a new head capture.
    fn saw_write(&mut self, first: &[u8], total: usize) {
        let Some(status) = response_status(first) else {
            return;
        };
        if status < 200 {
            return;
        }
        let head_end = find(first, b"\r\n\r\n").map_or(first.len(), |i| i + 4);
        let routed = find_ignore_case(&first[..head_end], b"\r\nx-request-id:").is_some();
        if routed || status < 400 {
            self.line.clear();
            self.capturing = true;
            return;
        }
        let answer = self.answer(status);
        self.replacing = Some((serialize(&answer), 0, total));
    }

    /// The answer to a head hyper refused with `status`.
    fn answer(&self, status: u16) -> HttpResponse {
        let what = match status {
            431 => format!(
                "the request head is over its bound: at most {H1_MAX_HEADERS} header fields and {H1_MAX_HEAD_BYTES} bytes"
            ),
            414 => format!("the request target is over its bound of {H1_MAX_TARGET} bytes"),
            _ => "the request line or a header field is not valid HTTP/1.1".to_string(),
        };
        let e = EdgeError::MalformedHead { status, what };
        let line = String::from_utf8_lossy(&self.line);
        let mut parts = line.trim_end().splitn(3, ' ');
        let method = parts
            .next()
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        let path = parts
            .next()
            .map(|t| t.split('?').next().unwrap_or(t))
            .filter(|p| p.starts_with('/'));
        match path.and_then(|p| self.router.owner(method.as_ref(), p)) {
            Some(entry) => (entry.on_error)(&e, &entry.info),
            None => super::error_page_for(&e),
        }
    }
}

/// The status of an HTTP/1.x response head at the start of `b`.
fn response_status(b: &[u8]) -> Option<u16> {
    if !b.starts_with(b"HTTP/1.") || b.len() < 12 || b[8] != b' ' {
        return None;
    }
    std::str::from_utf8(&b[9..12]).ok()?.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// `r` as HTTP/1.1 bytes, closing the connection (hyper closes it after its refusals).
fn serialize(r: &HttpResponse) -> Vec<u8> {
    let body = r
        .body()
        .clone()
        .collect()
        .now_or_never()
        .and_then(|c| c.ok())
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let status = r.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in r.headers() {
        if name == hyper::header::CONTENT_LENGTH || name == hyper::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncWrite + Unpin> HeadErrors<T> {
    /// Writes what is left of the replacing answer; `Ready(Ok(n))` with the bytes of hyper's
    /// it stood for once all of it is out.
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, at, stands_for)) = &mut self.replacing else {
            return Poll::Ready(Ok(0));
        };
        while *at < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = *stands_for;
        self.replacing = None;
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let filled = buf.filled();
            if filled.len() > before {
                this.saw_read(&filled[before..]);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            this.saw_write(buf, buf.len());
        }
        if this.replacing.is_some() {
            return this.poll_replacing(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                this.saw_write(first, bufs.iter().map(|b| b.len()).sum());
            }
        }
        if this.replacing.is_some() {
            return this.poll_replacing(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_heads_are_read_from_the_first_bytes() {
        assert_eq!(response_status(b"HTTP/1.1 431 Request Header"), Some(431));
        assert_eq!(response_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(response_status(b"\x00\x00\x12\x04"), None);
        assert_eq!(response_status(b"HTTP/1.1 4"), None);
        assert!(find_ignore_case(b"a\r\nX-Request-Id: 1", b"\r\nx-request-id:").is_some());
    }
}
