//! The queue from a transport task to the peer manager, bounded twice: in events
//! (`MESH_EVENTS_MAX`) and in the bytes of the frames it holds (`MESH_EVENT_BYTES_MAX`), so
//! a slow peer manager facing a flood of large frames holds tens of MiB, not thousands of
//! frames at the frame-size limit each. A frame that does not fit is dropped at once and
//! counted; the receiver reports the count as `MeshEvent::FramesDropped` before its next
//! event, so the peer manager can put it in `/metrics`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use super::MeshEvent;

/// Events queued from a transport task to the peer manager.
pub const MESH_EVENTS_MAX: usize = 4096;
/// Bytes of inbound frames queued from one transport task to the peer manager.
pub const MESH_EVENT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventRefused {
    /// The queue is at its event capacity (given).
    #[error("the event queue holds {0} events already")]
    QueueFull(usize),
    /// The frame would push the queued frame bytes (given) over the byte bound.
    #[error("the event queue holds {0} frame bytes already")]
    BytesFull(usize),
    /// The receiving end was dropped.
    #[error("the peer manager is gone")]
    Closed,
}

/// The accounting both ends share.
#[derive(Debug, Default)]
struct Shared {
    queued_bytes: AtomicUsize,
    dropped_frames: AtomicU64,
}

/// The transport's end.
#[derive(Debug, Clone)]
pub struct EventSender {
    events: mpsc::Sender<MeshEvent>,
    shared: Arc<Shared>,
    bytes_max: usize,
}

/// The peer manager's end: a `Stream` of events, and `recv` for plain async code.
#[derive(Debug)]
pub struct EventReceiver {
    events: mpsc::Receiver<MeshEvent>,
    shared: Arc<Shared>,
}

/// A queue bounded to `events_max` events and `bytes_max` bytes of frames.
pub fn event_queue(events_max: usize, bytes_max: usize) -> (EventSender, EventReceiver) {
    let (sender, receiver) = mpsc::channel(events_max);
    let shared = Arc::new(Shared::default());
    (
        EventSender {
            events: sender,
            shared: shared.clone(),
            bytes_max,
        },
        EventReceiver {
            events: receiver,
            shared,
        },
    )
}

/// The queue every transport uses.
pub fn mesh_event_queue() -> (EventSender, EventReceiver) {
    event_queue(MESH_EVENTS_MAX, MESH_EVENT_BYTES_MAX)
}

fn frame_bytes(event: &MeshEvent) -> usize {
    match event {
        MeshEvent::Frame { frame, .. } => frame.len(),
        _ => 0,
    }
}

impl EventSender {
    /// Queue `event` now or refuse it; a refused frame is counted for the receiver.
    pub fn try_send(&self, event: MeshEvent) -> Result<(), EventRefused> {
        let bytes = frame_bytes(&event);
        if bytes > 0 {
            let reserved = self.shared.queued_bytes.fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |queued| {
                    queued
                        .checked_add(bytes)
                        .filter(|total| *total <= self.bytes_max)
                },
            );
            if let Err(queued) = reserved {
                self.count_dropped(bytes);
                return Err(EventRefused::BytesFull(queued));
            }
        }
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                match error {
                    mpsc::error::TrySendError::Full(_) => {
                        self.count_dropped(bytes);
                        Err(EventRefused::QueueFull(self.events.max_capacity()))
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(EventRefused::Closed),
                }
            }
        }
    }

    /// Queue `event`, waiting for room in events (not bytes: only state changes, which
    /// carry no frame, are sent this way).
    pub async fn send(&self, event: MeshEvent) -> Result<(), EventRefused> {
        debug_assert_eq!(frame_bytes(&event), 0, "frames go through try_send");
        self.events
            .send(event)
            .await
            .map_err(|_| EventRefused::Closed)
    }

    fn count_dropped(&self, bytes: usize) {
        if bytes > 0 {
            self.shared.dropped_frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl EventReceiver {
    /// The next event (`FramesDropped` first when frames were dropped since the last one);
    /// `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<MeshEvent> {
        futures::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Frame bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<MeshEvent>> {
        let dropped = self.shared.dropped_frames.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            return Poll::Ready(Some(MeshEvent::FramesDropped(dropped)));
        }
        let polled = self.events.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &polled {
            self.shared
                .queued_bytes
                .fetch_sub(frame_bytes(event), Ordering::AcqRel);
        }
        polled
    }
}

impl Stream for EventReceiver {
    type Item = MeshEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MeshEvent>> {
        self.get_mut().poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::FrameVia;

    fn frame(bytes: usize) -> MeshEvent {
        MeshEvent::Frame {
            frame: vec![0; bytes],
            via: FrameVia::Direct,
            transport_peer: None,
            gossip: None,
        }
    }

    #[tokio::test]
    async fn frames_past_the_byte_bound_are_refused_and_reported() {
        let (sender, mut receiver) = event_queue(100, 1000);
        assert_eq!(sender.try_send(frame(600)), Ok(()));
        assert_eq!(sender.try_send(frame(300)), Ok(()));
        // Room for events, not for bytes.
        assert_eq!(
            sender.try_send(frame(200)),
            Err(EventRefused::BytesFull(900))
        );
        assert_eq!(receiver.queued_bytes(), 900);
        assert!(matches!(
            receiver.recv().await,
            Some(MeshEvent::FramesDropped(1))
        ));
        assert!(
            matches!(receiver.recv().await, Some(MeshEvent::Frame { frame, .. }) if frame.len() == 600)
        );
        assert_eq!(receiver.queued_bytes(), 300);
        // Taking a frame out makes room again.
        assert_eq!(sender.try_send(frame(700)), Ok(()));
        assert_eq!(receiver.queued_bytes(), 1000);
    }

    #[tokio::test]
    async fn a_full_event_queue_releases_the_bytes_it_reserved() {
        let (sender, mut receiver) = event_queue(1, 1000);
        assert_eq!(sender.try_send(frame(10)), Ok(()));
        assert_eq!(sender.try_send(frame(10)), Err(EventRefused::QueueFull(1)));
        assert_eq!(receiver.queued_bytes(), 10);
        assert!(matches!(
            receiver.recv().await,
            Some(MeshEvent::FramesDropped(1))
        ));
        assert!(matches!(
            receiver.recv().await,
            Some(MeshEvent::Frame { .. })
        ));
        assert_eq!(receiver.queued_bytes(), 0);
        // State changes carry no frame and are never counted as dropped frames.
        assert_eq!(
            sender.try_send(MeshEvent::Connected(libp2p::PeerId::random())),
            Ok(())
        );
        assert_eq!(
            sender.try_send(MeshEvent::Connected(libp2p::PeerId::random())),
            Err(EventRefused::QueueFull(1))
        );
        assert!(matches!(
            receiver.recv().await,
            Some(MeshEvent::Connected(_))
        ));
        drop(sender);
        assert!(receiver.recv().await.is_none());
    }
}
