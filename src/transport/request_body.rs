//! Reading a unary request body with a size limit, without losing the answer.
//!
//! When a body passes the limit, the server answers `resource_exhausted` before
//! the client has finished sending. Over HTTP/1.1 the connection is then closed
//! with unread bytes in the server's receive buffer, and the kernel answers them
//! with a TCP reset: the client's own receive buffer is discarded with it, so the
//! client never sees the answer, only "connection reset". To keep the answer
//! readable, an over-limit body is read to its end and dropped, up to a bound
//! past which the client is treated as hostile and the connection simply closes.

use crate::error::Error;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use std::time::Duration;

/// How far past the limit a body is still read and dropped so that its sender
/// gets the `resource_exhausted` answer. Beyond it the answer may be lost.
const DRAIN_BYTES_PAST_LIMIT: usize = 16 * 1024 * 1024;

/// Reads `body` up to `limit` bytes within `deadline`.
pub async fn read_limited(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, Error> {
    tokio::time::timeout(deadline, read(body, limit))
        .await
        .map_err(|_| Error::DeadlineExceeded(format!("the request body did not arrive within {} s", deadline.as_secs())))?
}

async fn read(mut body: Body, limit: usize) -> Result<Bytes, Error> {
    let mut collected = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::MalformedRequest(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > limit.saturating_add(DRAIN_BYTES_PAST_LIMIT) {
            break;
        }
        if seen <= limit {
            collected.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(Error::ResourceExhausted(format!("the request body is larger than the {limit}-byte limit")));
    }
    Ok(collected.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: Vec<&'static [u8]>) -> Body {
        let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))));
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_returned_whole() {
        let body = chunked(vec![b"hello ", b"world"]);
        assert_eq!(read_limited(body, 11, Duration::from_secs(5)).await.unwrap(), Bytes::from_static(b"hello world"));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_read_to_its_end_and_refused() {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let reader = tokio::spawn(read_limited(body, 4, Duration::from_secs(5)));
        for _ in 0..3 {
            sender.send(Ok(Bytes::from_static(b"abcd"))).await.unwrap();
        }
        // The reader is still draining: it has not answered before the body ended.
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        drop(sender);
        match reader.await.unwrap() {
            Err(Error::ResourceExhausted(message)) => assert!(message.contains("4-byte limit"), "{message}"),
            other => panic!("expected resource_exhausted, got {other:?}"),
        }
    }
}
