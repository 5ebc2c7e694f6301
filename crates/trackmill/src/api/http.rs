//! Connections: the accept loop (at most [`MAX_CONNECTIONS`] served at once; more wait in the
//! listen backlog), the request head read here under `api.request_timeout` so that a client that
//! stalls before its headers are complete is answered 408 (hyper would only close the
//! connection), then hyper serves the one request of the connection through the router with its
//! limits: a body over `api.max_body` is 413, a request not answered within the timeout 408.

use super::Shared;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// Connections served at the same time.
const MAX_CONNECTIONS: usize = 64;
/// The longest request head (request line and headers); longer is answered 431.
const MAX_HEAD: usize = 16 << 10;

pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = super::routes::router(shared.clone())
        .layer(axum::extract::DefaultBodyLimit::max(shared.max_body))
        .layer(RequestBodyLimitLayer::new(shared.max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            shared.timeout,
        ));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("api: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let timeout = shared.timeout;
        tokio::spawn(async move {
            // The whole connection is bounded too: head, body, answer and a slow reader of it.
            let _ = tokio::time::timeout(timeout * 3, connection(stream, app, timeout)).await;
            drop(permit);
        });
    }
}

/// Serves one connection: its head within `timeout` (else 408), then its one request.
async fn connection(mut stream: TcpStream, app: axum::Router, timeout: Duration) {
    let head = match tokio::time::timeout(timeout, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return refuse(
                &mut stream,
                "431 Request Header Fields Too Large",
                "request head too large",
            )
            .await
        }
        Ok(Err(_)) => return,
        Err(_) => {
            return refuse(
                &mut stream,
                "408 Request Timeout",
                "the request did not arrive in time",
            )
            .await
        }
    };
    let io = TokioIo::new(Replay {
        head,
        pos: 0,
        inner: stream,
    });
    let service = hyper_util::service::TowerToHyperService::new(app);
    let result = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(io, service)
        .await;
    if let Err(e) = result {
        tracing::debug!("api: connection: {e}");
    }
}

/// Reads until the end of the request head; `None` when it is longer than [`MAX_HEAD`]. The
/// bytes read (the head and whatever of the body came with it) are returned to be replayed.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// Answers `status` with a JSON error and closes the connection.
async fn refuse(stream: &mut TcpStream, status: &str, message: &str) {
    let body = serde_json::json!({ "error": message }).to_string();
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The connection with the bytes already read in front of it.
struct Replay {
    head: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.head[from..from + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
