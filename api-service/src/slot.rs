//! The service's cap on connections ([`limit`]): each accepted connection holds one slot of a
//! semaphore until it closes; while none is free, the server takes no more connections (they
//! wait in the listen backlog), so a client opening connections without end cannot exhaust the
//! service's descriptors. A connection that sends nothing within [`FIRST_BYTE_SECS`] of its
//! accept is closed, so connections opened and left silent give their slots back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// Time a new connection has to send its first byte, in seconds.
pub const FIRST_BYTE_SECS: u64 = 10;

/// An accepted connection and its slot.
pub struct Slot<T> {
    io: T,
    _slot: OwnedSemaphorePermit,
    /// Until the first byte arrives: when the connection is closed without one.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// `incoming` with every connection holding a slot of `slots` (waiting for one first).
pub fn limit<T: Send + 'static>(
    incoming: impl Stream<Item = io::Result<T>> + Send + 'static,
    slots: &Arc<Semaphore>,
) -> Pin<Box<dyn Stream<Item = io::Result<Slot<T>>> + Send>> {
    let slots = slots.clone();
    Box::pin(incoming.then(move |conn| {
        let slots = slots.clone();
        async move {
            let io = conn?;
            let slot = slots.acquire_owned().await.map_err(io::Error::other)?;
            let first_byte = Some(Box::pin(tokio::time::sleep(
                std::time::Duration::from_secs(FIRST_BYTE_SECS),
            )));
            Ok(Slot {
                io,
                _slot: slot,
                first_byte,
            })
        }
    }))
}

impl<T: AsyncRead + Unpin> AsyncRead for Slot<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Some(deadline) = self.first_byte.as_mut() {
            match r {
                Poll::Ready(Ok(())) if buf.filled().len() > before => self.first_byte = None,
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the first-byte deadline",
                    )));
                }
                _ => {}
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Slot<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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

impl<T: Connected> Connected for Slot<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_holds_its_slot_until_it_closes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let slots = Arc::new(Semaphore::new(1));
            let conns = tokio_stream::iter([Ok::<u8, io::Error>(1), Ok(2)]);
            let mut s = limit(conns, &slots);
            let first = s.next().await.expect("one").expect("ok");
            assert_eq!(first.io, 1);
            // The second waits while the first is open.
            let waited = tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await;
            assert!(waited.is_err(), "a second connection got a slot");
            drop(first);
            let second = s.next().await.expect("two").expect("ok");
            assert_eq!(second.io, 2);
        });
    }

    #[test]
    fn a_silent_connection_is_closed_at_the_first_byte_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let slots = Arc::new(Semaphore::new(2));
            let (silent, _silent_peer) = tokio::io::duplex(64);
            let (talks, mut talks_peer) = tokio::io::duplex(64);
            let conns = tokio_stream::iter([Ok::<_, io::Error>(silent), Ok(talks)]);
            let mut s = limit(conns, &slots);
            let mut silent = s.next().await.expect("one").expect("ok");
            let mut talks = s.next().await.expect("two").expect("ok");
            let mut b = [0u8; 4];
            let e = silent.read(&mut b).await.expect_err("closed");
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            talks_peer.write_all(b"PRI ").await.expect("write");
            assert_eq!(talks.read(&mut b).await.expect("read"), 4);
            // Past the deadline, a connection that spoke waits as long as it likes.
            let idle = tokio::time::timeout(
                std::time::Duration::from_secs(3 * FIRST_BYTE_SECS),
                talks.read(&mut b),
            )
            .await;
            assert!(idle.is_err(), "a connection that spoke was closed");
        });
    }
}
