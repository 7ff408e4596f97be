//! One realistic value of every `APNMessage` variant, every field set to something other
//! than a default: for round-trip tests, fuzz seeds and benchmarks. The node never sends
//! these.

use chrono::{DateTime, Utc};
use serde_bytes::ByteBuf;
use uuid::Uuid;

use super::*;
use crate::identity::Identity;

fn sealed(seed: u8) -> Sealed {
    Sealed {
        nonce: u64::from(seed) * 1_000,
        ciphertext: ByteBuf::from(vec![seed; 48]),
    }
}

/// One value of every variant, with every field set to something other than a default.
pub fn every_variant(identity: &Identity, at: DateTime<Utc>) -> Vec<APNMessage> {
    let node_id = identity.node_id().clone();
    let task_id = Uuid::from_u128(0x5eed);
    let execution_id = Uuid::from_u128(0xe5ec);
    let usage = ComputeUsage {
        cpu_seconds: 1.25,
        memory_gb_seconds: 0.5,
        wall_seconds: 3.0,
    };
    vec![
        APNMessage::NodeAnnouncement(NodeAnnouncement {
            node_id: node_id.clone(),
            capabilities: vec!["rust".into()],
            executor_profiles: vec!["SHELL".into()],
            compute_rate_per_cpu_hour: Vibe::from_micros(10_500_000),
            min_task_reward: Vibe::from_whole(1),
            max_concurrent_tasks: 4,
            free_slots: 3,
            noise_static_key: ByteBuf::from(identity.noise_public().to_vec()),
            noise_key_signature: ByteBuf::from(identity.noise_binding().to_vec()),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            relay_only: true,
            version: "0.1.0".into(),
        }),
        APNMessage::TaskDistributionRequest(TaskDistributionRequest {
            task_id,
            executor_profile: "CLAUDE_CODE".into(),
            requirements: TaskRequirements {
                capabilities: vec!["python".into()],
                memory_mb: 2048,
                timeout_s: 600,
            },
            reward: Vibe::from_micros(12_345_678),
            content_hash: "ab".repeat(32),
            bid_deadline: at,
        }),
        APNMessage::TaskBid(TaskBid {
            task_id,
            bidder: node_id.clone(),
            price: Vibe::from_whole(3),
            estimated_duration_s: 120,
            capabilities: vec!["rust".into()],
            valid_until: at,
            free_slots: Some(3),
        }),
        APNMessage::TaskAssigned(TaskAssigned {
            task_id,
            executor: node_id.clone(),
            agreed_price: Vibe::from_whole(3),
            escrow_id: Uuid::new_v4(),
            deadline: at,
            noise_handshake: ByteBuf::from(vec![1, 2, 3]),
        }),
        APNMessage::ExecutionStarted(ExecutionStarted {
            task_id,
            execution_id,
            executor: node_id.clone(),
            started_at: at,
            noise_handshake: ByteBuf::from(vec![4, 5, 6]),
        }),
        APNMessage::ExecutionProgress(ExecutionProgress {
            task_id,
            execution_id,
            stage: ExecutionStage::Testing,
            percent: 70,
            current_action: Some(sealed(1)),
        }),
        APNMessage::ExecutionLogs(ExecutionLogs {
            task_id,
            execution_id,
            sequence: 9,
            lines: sealed(2),
        }),
        APNMessage::ExecutionCompleted(ExecutionCompleted {
            task_id,
            execution_id,
            result_hash: "cd".repeat(32),
            result_signature: ByteBuf::from(vec![9; 64]),
            result: sealed(3),
            usage,
            delivery: ResultDelivery::Chunked {
                bytes: 20 << 20,
                total_chunks: 107,
                sha256: "ef".repeat(32),
            },
        }),
        APNMessage::ExecutionFailed(ExecutionFailed {
            task_id,
            execution_id,
            stage: ExecutionStage::Setup,
            error: String::new(),
            detail: Some(sealed(4)),
            usage,
        }),
        APNMessage::BandwidthContribution(BandwidthContribution {
            contributor: node_id.clone(),
            beneficiary: node_id.clone(),
            purpose: BandwidthPurpose::GitSync,
            bytes: 1 << 30,
            period_start: at,
            period_end: at,
            amount: Vibe::from_micros(1),
            payment_id: Some(Uuid::new_v4()),
        }),
        APNMessage::ComputeContribution(ComputeContribution {
            task_id,
            contributor: node_id,
            usage,
            amount: Vibe::from_whole(2),
            escrow_id: Some(Uuid::new_v4()),
        }),
        APNMessage::VibeTransaction(VibeTransaction::signed_with_id(
            identity,
            Uuid::new_v4(),
            Identity::ephemeral().public_key(),
            Vibe::from_whole(3),
            TransactionReason::TaskExecution,
            Some(task_id),
            at,
        )),
        APNMessage::RepoChunk(RepoChunk {
            task_id,
            index: 2,
            total: 5,
            bytes: 5 * crate::market::REPO_CHUNK_BYTES as u64 - 10,
            data: sealed(4),
        }),
        APNMessage::TaskCancelled(TaskCancelled {
            task_id,
            reason: "cancelled by the user".into(),
        }),
        APNMessage::PaymentReceipt(PaymentReceipt { tx_id: task_id }),
        APNMessage::PingRequest(PingRequest { nonce: 42 }),
        APNMessage::PingReply(PingReply { nonce: 42 }),
        APNMessage::ResultChunk(ResultChunk {
            task_id,
            execution_id,
            index: 3,
            total: 107,
            data: sealed(5),
        }),
        APNMessage::TaskBidDeclined(TaskBidDeclined {
            task_id,
            reason: "no free slot".into(),
        }),
    ]
}
