//! The accept loop shared by the control socket and the metrics endpoint: each connection is
//! served by its own task, at most [`MAX_CLIENTS`] at once (each holds a task and, until answered,
//! one queued event); further clients wait in the listen backlog.

use crate::event::Event;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Connections served at the same time, per endpoint.
pub const MAX_CLIENTS: usize = 16;

/// A listening socket of either endpoint.
pub trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn next_client(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn next_client(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn next_client(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accepts connections for the life of the runtime and serves each with `serve`.
pub fn spawn<L, F, Fut>(
    what: &'static str,
    listener: L,
    events: mpsc::UnboundedSender<Event>,
    serve: F,
) where
    L: Listener,
    F: Fn(L::Stream, mpsc::UnboundedSender<Event>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.next_client().await {
                Ok(stream) => {
                    let served = serve(stream, events.clone());
                    tokio::spawn(async move {
                        served.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}
