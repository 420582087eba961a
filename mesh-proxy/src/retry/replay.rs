//! A request body that can be sent again: the downstream body goes to the first attempt while
//! a copy is kept, up to a limit, for retries (Envoy buffers up to the route's
//! `request_body_buffer_limit`, else the listener's or cluster's
//! `per_connection_buffer_limit_bytes`, 1 MiB by default).
//!
//! [`ReplayBody::new`] returns the body for the first attempt and a [`Replay`] handle. Each
//! [`Replay::replay`] makes the body of the next attempt: it yields what was kept, then goes on
//! reading the downstream body where the earlier attempts stopped (an attempt may fail before
//! it has read the whole body), and ends with the trailers. Making a replay retires every
//! earlier body: polled again, they fail with [`Error::Unavailable`] (so that a connection still
//! holding one aborts that stream instead of ending it short).
//!
//! Once more than `limit` bytes of data have been read, nothing more is kept, the copy is
//! dropped, and `replay` returns `None` for the rest of the request: Envoy then gives up on
//! retries and counts `retry_or_shadow_abandoned` at that moment, which the counter passed to
//! [`ReplayBody::new`] does. The limit is on data bytes (`kept + frame > limit` overflows, as
//! in Envoy's router); trailers are kept whatever their size.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::stats::Counter;

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

/// Errors of a [`ReplayBody`].
#[derive(Debug, thiserror::Error)]
pub enum Error<E> {
    /// The downstream body failed.
    #[error("request body: {0}")]
    Body(#[source] E),
    /// The body was handed to a newer attempt, or the downstream body failed earlier.
    #[error("the request body is no longer available to this attempt")]
    Unavailable,
}

/// The body of one attempt.
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Which attempt this body belongs to; only the newest may read.
    generation: u64,
    /// Kept chunks already yielded by this body.
    pos: usize,
    trailers_sent: bool,
}

/// Makes the bodies of retries (see the module docs).
pub struct Replay<B> {
    shared: Arc<Mutex<Shared<B>>>,
}

struct Shared<B> {
    /// The downstream body (polled under the lock, by the newest body only).
    inner: Pin<Box<B>>,
    generation: u64,
    /// What was kept, in order; all of it while `keeping`.
    chunks: Vec<Bytes>,
    kept: usize,
    limit: usize,
    /// Still keeping a copy (false for a pass-through body, or after an overflow).
    keeping: bool,
    /// The downstream body ended (after its trailers, if any).
    end: bool,
    trailers: Option<HeaderMap>,
    /// The downstream body failed.
    failed: bool,
    /// More than `limit` bytes were read while keeping.
    overflowed: bool,
    abandoned: Option<Counter>,
}

fn lock<B>(m: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    /// The first attempt's body and the handle for replays. Data past `limit` bytes is not
    /// kept; at that moment `abandoned` (Envoy's `retry_or_shadow_abandoned`) is incremented.
    pub fn new(body: B, limit: usize, abandoned: Option<Counter>) -> (ReplayBody<B>, Replay<B>) {
        let shared = Arc::new(Mutex::new(Shared {
            inner: Box::pin(body),
            generation: 0,
            chunks: Vec::new(),
            kept: 0,
            limit,
            keeping: true,
            end: false,
            trailers: None,
            failed: false,
            overflowed: false,
            abandoned,
        }));
        let body = ReplayBody {
            shared: shared.clone(),
            generation: 0,
            pos: 0,
            trailers_sent: false,
        };
        (body, Replay { shared })
    }

    /// A body that keeps nothing (for requests that will not be retried).
    pub fn passthrough(body: B) -> ReplayBody<B> {
        let (body, replay) = ReplayBody::new(body, 0, None);
        lock(&replay.shared).keeping = false;
        body
    }
}

impl<B> Replay<B> {
    /// The body for the next attempt, or `None` when the request can no longer be replayed
    /// (more than the limit was read, the downstream body failed, or nothing is kept).
    pub fn replay(&self) -> Option<ReplayBody<B>> {
        let mut s = lock(&self.shared);
        if !s.keeping || s.failed {
            return None;
        }
        s.generation += 1;
        Some(ReplayBody {
            shared: self.shared.clone(),
            generation: s.generation,
            pos: 0,
            trailers_sent: false,
        })
    }

    /// Whether [`Replay::replay`] would give a body.
    pub fn is_replayable(&self) -> bool {
        let s = lock(&self.shared);
        s.keeping && !s.failed
    }

    /// Whether the body went over the limit.
    pub fn overflowed(&self) -> bool {
        lock(&self.shared).overflowed
    }

    /// Data bytes kept so far (what was kept before an overflow, once over the limit).
    pub fn kept_bytes(&self) -> usize {
        lock(&self.shared).kept
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = Error<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let mut s = lock(&this.shared);
        if this.generation != s.generation || s.failed {
            return Poll::Ready(Some(Err(Error::Unavailable)));
        }
        if let Some(chunk) = s.chunks.get(this.pos) {
            let chunk = chunk.clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.end {
            if !this.trailers_sent
                && let Some(t) = s.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        let s = &mut *s;
        match s.inner.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.end = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                Poll::Ready(Some(Err(Error::Body(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if s.keeping {
                        if s.kept.saturating_add(data.len()) > s.limit {
                            // Over the limit: stop keeping, free the copy, give up on replays.
                            s.keeping = false;
                            s.overflowed = true;
                            s.chunks = Vec::new();
                            this.pos = 0;
                            if let Some(c) = &s.abandoned {
                                c.inc();
                            }
                        } else {
                            s.kept += data.len();
                            s.chunks.push(data.clone());
                            this.pos += 1;
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.end = true;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.shared);
        if self.generation != s.generation || s.failed || self.pos < s.chunks.len() {
            return false;
        }
        if s.end {
            return s.trailers.is_none() || self.trailers_sent;
        }
        s.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let s = lock(&self.shared);
        let rest: u64 = s
            .chunks
            .get(self.pos..)
            .unwrap_or_default()
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        if s.end {
            return SizeHint::with_exact(rest);
        }
        let inner = s.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("generation", &self.generation)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<B> std::fmt::Debug for Replay<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.shared);
        f.debug_struct("Replay")
            .field("kept", &s.kept)
            .field("limit", &s.limit)
            .field("keeping", &s.keeping)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use std::convert::Infallible;

    type Frames =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn frames(data: &[&'static str], trailers: Option<(&'static str, &'static str)>) -> Frames {
        let mut v: Vec<Result<Frame<Bytes>, Infallible>> = data
            .iter()
            .map(|d| Ok(Frame::data(Bytes::from_static(d.as_bytes()))))
            .collect();
        if let Some((k, val)) = trailers {
            let mut t = HeaderMap::new();
            t.insert(k, val.parse().unwrap());
            v.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(futures::stream::iter(v))
    }

    async fn read_all<B>(body: B) -> (Vec<u8>, Option<HeaderMap>)
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    async fn next_data<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Bytes
    where
        B::Error: std::fmt::Debug,
    {
        body.frame().await.unwrap().unwrap().into_data().unwrap()
    }

    #[tokio::test]
    async fn full_body_is_forwarded_and_replayed() {
        let (body, replay) = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 64, None);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(read_all(body).await, (b"hello".to_vec(), None));
        let again = replay.replay().unwrap();
        assert_eq!(again.size_hint().exact(), Some(5));
        assert_eq!(read_all(again).await, (b"hello".to_vec(), None));
        let third = replay.replay().unwrap();
        assert_eq!(read_all(third).await.0, b"hello");
        assert_eq!(replay.kept_bytes(), 5);
    }

    #[tokio::test]
    async fn empty_body_is_at_end_from_the_start() {
        let (body, replay) = ReplayBody::new(Empty::<Bytes>::new(), 64, None);
        assert!(body.is_end_stream());
        assert_eq!(read_all(body).await, (Vec::new(), None));
        let again = replay.replay().unwrap();
        assert!(again.is_end_stream());
        assert_eq!(again.size_hint().exact(), Some(0));
    }

    /// An attempt that read two of three frames fails; the retry gets the two kept frames,
    /// then the third from the downstream body, then the trailers; a third attempt gets it all
    /// from the copy.
    #[tokio::test]
    async fn streaming_body_continues_where_the_failed_attempt_stopped() {
        let counter = Counter::default();
        let (mut first, replay) = ReplayBody::new(
            frames(&["ab", "cd", "ef"], Some(("grpc-status", "0"))),
            64,
            Some(counter.clone()),
        );
        assert_eq!(next_data(&mut first).await, "ab");
        assert_eq!(next_data(&mut first).await, "cd");
        // The first attempt fails; its connection may still hold the body.
        let mut second = replay.replay().unwrap();
        assert!(matches!(first.frame().await, Some(Err(Error::Unavailable))));
        assert!(!first.is_end_stream());
        assert_eq!(next_data(&mut second).await, "ab");
        assert_eq!(next_data(&mut second).await, "cd");
        assert_eq!(next_data(&mut second).await, "ef");
        let t = second
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(t["grpc-status"], "0");
        assert!(second.frame().await.is_none());
        assert!(second.is_end_stream());

        let third = replay.replay().unwrap();
        assert_eq!(third.size_hint().exact(), Some(6));
        let (data, trailers) = read_all(third).await;
        assert_eq!(data, b"abcdef");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert_eq!(counter.get(), 0);
    }

    /// A body that waits for the client: the first attempt reads one frame and dies while the
    /// client is still sending; the retry gets the rest as it arrives.
    #[tokio::test]
    async fn pending_downstream_body_wakes_the_newest_attempt() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
        let (mut first, replay) = ReplayBody::new(StreamBody::new(rx), 64, None);
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"1"))))
            .unwrap();
        assert_eq!(next_data(&mut first).await, "1");
        let mut second = replay.replay().unwrap();
        drop(first);
        assert_eq!(next_data(&mut second).await, "1");
        let reader = tokio::spawn(async move { read_all(second).await });
        tokio::task::yield_now().await;
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"2"))))
            .unwrap();
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"3"))))
            .unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap().0, b"23");
        assert_eq!(read_all(replay.replay().unwrap()).await.0, b"123");
    }

    #[tokio::test]
    async fn over_the_limit_the_body_streams_on_but_cannot_be_replayed() {
        let counter = Counter::default();
        let (mut body, replay) = ReplayBody::new(
            frames(&["123456", "789012", "345"], Some(("x-t", "1"))),
            10,
            Some(counter.clone()),
        );
        assert_eq!(next_data(&mut body).await, "123456");
        assert!(replay.is_replayable());
        assert!(!replay.overflowed());
        // 6 + 6 > 10: the second frame still goes upstream, but nothing more is kept.
        assert_eq!(next_data(&mut body).await, "789012");
        assert!(!replay.is_replayable());
        assert!(replay.overflowed());
        assert_eq!(counter.get(), 1);
        assert!(replay.replay().is_none());
        let (rest, trailers) = read_all(body).await;
        assert_eq!(rest, b"345");
        assert_eq!(trailers.unwrap()["x-t"], "1");
        assert_eq!(counter.get(), 1, "counted once");
    }

    #[tokio::test]
    async fn exactly_at_the_limit_is_kept() {
        let (body, replay) = ReplayBody::new(frames(&["12345", "67890"], None), 10, None);
        assert_eq!(read_all(body).await.0, b"1234567890");
        assert!(!replay.overflowed());
        assert_eq!(read_all(replay.replay().unwrap()).await.0, b"1234567890");
    }

    #[tokio::test]
    async fn passthrough_keeps_nothing() {
        let body = ReplayBody::passthrough(frames(&["a", "b"], None));
        assert_eq!(read_all(body).await.0, b"ab");
    }

    #[tokio::test]
    async fn a_failed_downstream_body_cannot_be_replayed() {
        let items: Vec<Result<Frame<Bytes>, &'static str>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err("client went away"),
        ];
        let (mut body, replay) =
            ReplayBody::new(StreamBody::new(futures::stream::iter(items)), 64, None);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        assert!(matches!(
            body.frame().await,
            Some(Err(Error::Body("client went away")))
        ));
        assert!(replay.replay().is_none());
        assert!(matches!(body.frame().await, Some(Err(Error::Unavailable))));
    }
}
