//! The `/apn/direct/1` request-response codec: a request is one length-prefixed frame, the
//! response an empty acknowledgement. A length over the frame limit is refused before the
//! body is read.

use std::io;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

use crate::messages::codec::FRAME_BYTES_MAX;

/// Request-response codec: a request is one length-prefixed frame, the response an empty
/// acknowledgement. Lengths over the frame limit are refused before reading the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

async fn read_frame<T>(io: &mut T, limit: usize) -> io::Result<Vec<u8>>
where
    T: futures::AsyncRead + Unpin + Send,
{
    let mut length_bytes = [0u8; 4];
    io.read_exact(&mut length_bytes).await?;
    let length = u32::from_be_bytes(length_bytes) as usize;
    if length > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes over the {limit} byte limit"),
        ));
    }
    let mut frame = vec![0u8; length];
    io.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame<T>(io: &mut T, frame: &[u8]) -> io::Result<()>
where
    T: futures::AsyncWrite + Unpin + Send,
{
    let length = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&length.to_be_bytes()).await?;
    io.write_all(frame).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        // One byte over the limit is still read so the peer manager can count it as
        // oversized rather than a stream error.
        read_frame(io, FRAME_BYTES_MAX + 1).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_frame(io, 64).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        frame: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &frame).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        frame: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &frame).await
    }
}
