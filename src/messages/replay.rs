//! The replay cache: which (sender, message id) pairs were seen, bounded per sender and in
//! all, so a flood from one key is refused instead of evicting others' live entries.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

use super::envelope::{DropReason, REPLAY_ENTRIES_PER_SENDER_MAX};
use crate::identity::PUBLIC_KEY_BYTES;

/// Remembers (sender, message id) pairs seen within the replay window. Bounded overall
/// ([`ReplayCache::new`]) and per sender ([`REPLAY_ENTRIES_PER_SENDER_MAX`]); a live entry
/// is never evicted: past a bound, new envelopes are refused instead.
#[derive(Debug, Default)]
pub struct ReplayCache {
    expiry_by_entry: HashMap<([u8; PUBLIC_KEY_BYTES], Uuid), i64>,
    order: VecDeque<(i64, [u8; PUBLIC_KEY_BYTES], Uuid)>,
    entries_by_sender: HashMap<[u8; PUBLIC_KEY_BYTES], usize>,
    capacity: usize,
    per_sender_max: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` entries, and at most
    /// [`REPLAY_ENTRIES_PER_SENDER_MAX`] (or `capacity`, if smaller) of one sender.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ReplayCache {
            capacity,
            per_sender_max: REPLAY_ENTRIES_PER_SENDER_MAX.min(capacity),
            ..ReplayCache::default()
        }
    }

    /// Record `msg_id` from `sender`: `Replayed` if it was already there (a replay or a
    /// duplicate delivery), `RateLimited` if the sender's quota or the cache is full.
    pub fn insert(
        &mut self,
        sender: [u8; PUBLIC_KEY_BYTES],
        msg_id: Uuid,
        now_ms: i64,
        skew_ms_max: i64,
    ) -> Result<(), DropReason> {
        self.expire(now_ms);
        if self.expiry_by_entry.contains_key(&(sender, msg_id)) {
            return Err(DropReason::Replayed);
        }
        let sender_entries = self.entries_by_sender.get(&sender).copied().unwrap_or(0);
        if sender_entries >= self.per_sender_max || self.order.len() >= self.capacity {
            return Err(DropReason::RateLimited);
        }
        let expires_at = now_ms.saturating_add(skew_ms_max.saturating_mul(2));
        self.expiry_by_entry.insert((sender, msg_id), expires_at);
        self.order.push_back((expires_at, sender, msg_id));
        *self.entries_by_sender.entry(sender).or_insert(0) += 1;
        Ok(())
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some(&(expires_at, sender, id)) = self.order.front() {
            if expires_at > now_ms {
                break;
            }
            self.order.pop_front();
            self.expiry_by_entry.remove(&(sender, id));
            if let Some(count) = self.entries_by_sender.get_mut(&sender) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.entries_by_sender.remove(&sender);
                }
            }
        }
    }
}
