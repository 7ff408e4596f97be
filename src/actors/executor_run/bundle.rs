//! The repository bundle of a remote run: its chunks, sealed in the run's Noise session,
//! collected under the limits a peer cannot choose (the chunk count must match the size,
//! nothing beyond [`BUNDLE_BYTES_MAX`](super::BUNDLE_BYTES_MAX)) and written to disk.

use tokio::sync::mpsc;

use super::report::Reporter;
use super::{BUNDLE_BYTES_MAX, BUNDLE_TIMEOUT, RunOrigin};
use crate::messages::RepoChunk;

/// Receive every chunk of a bundle of `bytes` in `total_chunks` and write it to
/// `bundle_path`; the reason for the run's failure otherwise.
pub(super) async fn receive_bundle(
    chunks: &mut mpsc::Receiver<RepoChunk>,
    reporter: &Reporter,
    total_chunks: u32,
    bytes: u64,
    bundle_path: &std::path::Path,
) -> Result<(), String> {
    let RunOrigin::Remote { session, .. } = &reporter.origin else {
        return Err("a bundle can only come from a remote originator".into());
    };
    // The peer chose both numbers: nothing is sized by them until they agree.
    crate::market::check_bundle_shape(bytes, total_chunks, BUNDLE_BYTES_MAX)
        .map_err(|e| e.to_string())?;
    let mut parts: Vec<Option<Vec<u8>>> = vec![None; total_chunks as usize];
    let mut received = 0u32;
    let mut received_bytes = 0u64;
    let deadline = tokio::time::Instant::now() + BUNDLE_TIMEOUT;
    while received < total_chunks {
        let chunk = tokio::time::timeout_at(deadline, chunks.recv())
            .await
            .map_err(|_| format!("repository bundle incomplete after {BUNDLE_TIMEOUT:?}: {received}/{total_chunks} chunks"))?
            .ok_or("repository transfer stopped")?;
        if chunk.total != total_chunks || chunk.index >= total_chunks {
            return Err(format!(
                "chunk {}/{} does not fit {total_chunks} chunks",
                chunk.index, chunk.total
            ));
        }
        let data = session
            .open(&chunk.data)
            .map_err(|e| format!("chunk does not decrypt: {e}"))?;
        received_bytes += data.len() as u64;
        if received_bytes > bytes || received_bytes > BUNDLE_BYTES_MAX {
            return Err(format!("bundle larger than announced ({bytes} bytes)"));
        }
        let slot = &mut parts[chunk.index as usize];
        if slot.is_none() {
            *slot = Some(data);
            received += 1;
        }
    }
    if received_bytes != bytes {
        return Err(format!(
            "bundle has {received_bytes} bytes, {bytes} announced"
        ));
    }
    if let Some(parent) = bundle_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let mut contents = Vec::with_capacity(bytes as usize);
    for part in parts.into_iter().flatten() {
        contents.extend_from_slice(&part);
    }
    std::fs::write(bundle_path, contents).map_err(|e| format!("cannot write the bundle: {e}"))
}
