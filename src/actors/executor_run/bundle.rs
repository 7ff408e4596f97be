//! The repository bundle of a remote run: its chunks, sealed in the run's Noise session,
//! each naming the bundle's size, collected under the limits a peer cannot choose (the
//! chunk count must match the size, nothing beyond
//! [`BUNDLE_BYTES_MAX`](super::BUNDLE_BYTES_MAX), every chunk but the last full-sized) and
//! written to disk where it belongs as it arrives: decrypting and writing happen on the
//! blocking pool, and the bundle is never whole in memory. The originator is told every
//! [`ACK_EVERY_CHUNKS`] chunks how many are written; its sender stays within a bounded
//! distance of that (flow control end to end).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::report::Reporter;
use super::{BUNDLE_BYTES_MAX, BUNDLE_TIMEOUT, RunOrigin};
use crate::market::REPO_CHUNK_BYTES;
use crate::messages::RepoChunk;

/// The originator hears how many chunks are written after this many more.
pub(super) const ACK_EVERY_CHUNKS: u32 = 8;

/// The size chunk `index` of a bundle of `bytes` in `total` chunks must have: every chunk
/// is full but the last, which holds the rest (nothing, for an empty bundle).
pub(super) fn expected_chunk_len(bytes: u64, total: u32, index: u32) -> u64 {
    if index + 1 < total {
        REPO_CHUNK_BYTES as u64
    } else {
        bytes - u64::from(total.saturating_sub(1)) * REPO_CHUNK_BYTES as u64
    }
}

/// Receive every chunk of a bundle and write it to `bundle_path`; `room` decides (on the
/// blocking pool, once the size is known) whether the disk may take it. Returns the
/// bundle's size in bytes (0: the executor's cache has the commit already), or the reason
/// for the run's failure.
pub(super) async fn receive_bundle(
    chunks: &mut mpsc::Receiver<RepoChunk>,
    reporter: &mut Reporter,
    bundle_path: &Path,
    room: impl FnOnce(u64) -> Result<(), String> + Send + 'static,
) -> Result<u64, String> {
    let RunOrigin::Remote { session, .. } = &reporter.origin else {
        return Err("a bundle can only come from a remote originator".into());
    };
    let opener = session.opener();
    let deadline = tokio::time::Instant::now() + BUNDLE_TIMEOUT;
    let mut next = tokio::time::timeout_at(deadline, chunks.recv())
        .await
        .map_err(|_| format!("no repository chunk after {BUNDLE_TIMEOUT:?}"))?
        .ok_or("repository transfer stopped")?;
    let (bytes, total) = (next.bytes, next.total);
    // The peer chose both numbers: nothing is sized by them until they agree.
    crate::market::check_bundle_shape(bytes, total, BUNDLE_BYTES_MAX).map_err(|e| e.to_string())?;
    let file = {
        let path = bundle_path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            room(bytes)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("cannot write the bundle: {e}"))?;
            file.set_len(bytes)
                .map_err(|e| format!("cannot write the bundle: {e}"))?;
            Ok::<_, String>(Arc::new(file))
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let mut written = vec![false; total as usize];
    let mut received = 0u32;
    loop {
        let chunk = next;
        if chunk.total != total || chunk.bytes != bytes || chunk.index >= total {
            return Err(format!(
                "chunk {}/{} of {} bytes does not fit {total} chunks of {bytes} bytes",
                chunk.index, chunk.total, chunk.bytes
            ));
        }
        if !written[chunk.index as usize] {
            let expected = expected_chunk_len(bytes, total, chunk.index);
            let offset = u64::from(chunk.index) * REPO_CHUNK_BYTES as u64;
            let (opener, file) = (opener.clone(), file.clone());
            tokio::task::spawn_blocking(move || {
                let data = opener
                    .open(&chunk.data)
                    .map_err(|e| format!("chunk does not decrypt: {e}"))?;
                if data.len() as u64 != expected {
                    return Err(format!(
                        "chunk {} has {} bytes, {expected} expected",
                        chunk.index,
                        data.len()
                    ));
                }
                file.write_all_at(&data, offset)
                    .map_err(|e| format!("cannot write the bundle: {e}"))
            })
            .await
            .map_err(|e| e.to_string())??;
            written[chunk.index as usize] = true;
            received += 1;
            if received == total || received.is_multiple_of(ACK_EVERY_CHUNKS) {
                reporter.repo_received(received, total, bytes).await;
            }
        }
        if received == total {
            return Ok(bytes);
        }
        next = tokio::time::timeout_at(deadline, chunks.recv())
            .await
            .map_err(|_| {
                format!(
                    "repository bundle incomplete after {BUNDLE_TIMEOUT:?}: {received}/{total} chunks"
                )
            })?
            .ok_or("repository transfer stopped")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_is_full_but_the_last() {
        let chunk = REPO_CHUNK_BYTES as u64;
        assert_eq!(expected_chunk_len(0, 1, 0), 0);
        assert_eq!(expected_chunk_len(10, 1, 0), 10);
        assert_eq!(expected_chunk_len(chunk * 2 + 5, 3, 0), chunk);
        assert_eq!(expected_chunk_len(chunk * 2 + 5, 3, 1), chunk);
        assert_eq!(expected_chunk_len(chunk * 2 + 5, 3, 2), 5);
        assert_eq!(expected_chunk_len(chunk * 2, 2, 1), chunk);
    }
}
