//! [`MtlsStream`]: a finished TLS stream that carries its [`ConnectionInfo`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::identity::connection::ConnectionInfo;

pin_project! {
    /// A server-side TLS stream together with what its handshake established.
    ///
    /// Frameworks that learn about a connection from its IO object (tonic's `Connected`, axum's
    /// `IncomingStream`) get the `ConnectionInfo` from here. Once the connection is
    /// [cut](ConnectionInfo::cut) (its certificate stopped verifying after a reload, and it did
    /// not close in time), every read and write fails, whichever server drives the stream.
    #[derive(Debug)]
    pub struct MtlsStream<IO = TcpStream> {
        #[pin]
        inner: TlsStream<IO>,
        info: ConnectionInfo,
    }
}

impl<IO> MtlsStream<IO> {
    /// Pairs a stream with its connection info.
    pub fn new(inner: TlsStream<IO>, info: ConnectionInfo) -> Self {
        MtlsStream { inner, info }
    }

    /// The connection info.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The TLS stream.
    pub fn get_ref(&self) -> &TlsStream<IO> {
        &self.inner
    }

    /// The TLS stream and the connection info.
    pub fn into_parts(self) -> (TlsStream<IO>, ConnectionInfo) {
        (self.inner, self.info)
    }
}

/// The error of every read and write on a connection that was [cut](ConnectionInfo::cut).
fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut: its client certificate no longer verifies",
    )
}

/// `Ready(Err)` once the connection was cut (the task is woken when that happens).
macro_rules! unless_cut {
    ($info:expr, $cx:expr) => {
        if $info.poll_cut($cx.waker()) {
            return Poll::Ready(Err(cut_error()));
        }
    };
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for MtlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        unless_cut!(this.info, cx);
        this.inner.poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MtlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        unless_cut!(this.info, cx);
        this.inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        unless_cut!(this.info, cx);
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        unless_cut!(this.info, cx);
        this.inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
