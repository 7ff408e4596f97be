//! Log batches in the order the executor sent them. `ExecutionLogs` travel direct or through
//! the relay and can overtake each other; each carries the run's batch `sequence` (0, 1,
//! 2, …). [`LogOrder`] releases batches in sequence, holds a bounded number that came
//! early, drops duplicates and stale ones, and gives up on a gap once the hold is full (a
//! lost batch must not stall the stream).

use std::collections::BTreeMap;

/// Early batches held at most while waiting for a missing one.
pub const EARLY_BATCHES_MAX: usize = 32;

/// The reorder buffer of one run's log stream.
#[derive(Debug)]
pub struct LogOrder<T> {
    next: u64,
    early: BTreeMap<u64, T>,
    early_max: usize,
}

impl<T> Default for LogOrder<T> {
    fn default() -> Self {
        LogOrder::new(EARLY_BATCHES_MAX)
    }
}

impl<T> LogOrder<T> {
    /// A buffer expecting batch 0 that holds at most `early_max` early batches (at least 1).
    pub fn new(early_max: usize) -> Self {
        LogOrder {
            next: 0,
            early: BTreeMap::new(),
            early_max: early_max.max(1),
        }
    }

    /// Batch `sequence` arrived: the batches now ready, in order. A duplicate or a batch
    /// already skipped returns nothing.
    pub fn accept(&mut self, sequence: u64, batch: T) -> Vec<T> {
        if sequence < self.next || self.early.contains_key(&sequence) {
            return Vec::new();
        }
        self.early.insert(sequence, batch);
        if sequence != self.next && self.early.len() > self.early_max {
            // The hold is full: the missing batch is taken as lost.
            if let Some((&first, _)) = self.early.first_key_value() {
                self.next = first;
            }
        }
        let mut ready = Vec::new();
        while let Some(batch) = self.early.remove(&self.next) {
            ready.push(batch);
            self.next += 1;
        }
        ready
    }

    /// Whatever is still held, in order (the run ended: nothing more will come).
    pub fn drain(&mut self) -> Vec<T> {
        let held = std::mem::take(&mut self.early);
        if let Some((&last, _)) = held.last_key_value() {
            self.next = last + 1;
        }
        held.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_come_out_in_sequence_whatever_the_arrival_order() {
        let mut order = LogOrder::new(8);
        assert_eq!(order.accept(1, "b"), Vec::<&str>::new());
        assert_eq!(order.accept(2, "c"), Vec::<&str>::new());
        assert_eq!(order.accept(0, "a"), vec!["a", "b", "c"]);
        assert_eq!(order.accept(3, "d"), vec!["d"]);
    }

    #[test]
    fn duplicates_and_stale_batches_are_dropped() {
        let mut order = LogOrder::new(8);
        assert_eq!(order.accept(0, "a"), vec!["a"]);
        assert!(order.accept(0, "a again").is_empty());
        assert!(order.accept(2, "c").is_empty());
        assert!(order.accept(2, "c again").is_empty());
        assert_eq!(order.accept(1, "b"), vec!["b", "c"]);
    }

    #[test]
    fn a_lost_batch_stalls_the_stream_only_until_the_hold_is_full() {
        let mut order = LogOrder::new(2);
        assert!(order.accept(1, 1).is_empty());
        assert!(order.accept(2, 2).is_empty());
        // Batch 0 never comes: a third early batch overflows the hold and the gap is skipped.
        assert_eq!(order.accept(3, 3), vec![1, 2, 3]);
        // Batch 0 turning up late is stale now.
        assert!(order.accept(0, 0).is_empty());
        assert_eq!(order.accept(4, 4), vec![4]);
    }

    #[test]
    fn the_end_of_a_run_releases_what_is_held() {
        let mut order = LogOrder::new(8);
        assert!(order.accept(2, "c").is_empty());
        assert!(order.accept(5, "f").is_empty());
        assert_eq!(order.drain(), vec!["c", "f"]);
        assert!(order.accept(4, "e").is_empty());
        assert_eq!(order.accept(6, "g"), vec!["g"]);
    }
}
