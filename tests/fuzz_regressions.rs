//! The normal-suite side of fuzzing (`fuzz/`, run by `scripts/fuzz.sh`):
//!
//! - property round trips over the wire codec, the signed envelope and the `POST /api/tasks`
//!   body, the same invariants the fuzz targets assert, on every `cargo test`;
//! - regression tests: every input a fuzz target crashed on, fed to the code it crashed;
//! - `write_fuzz_seeds` (ignored): regenerates the committed seed inputs under
//!   `fuzz/seeds/`.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::path::Path;

use apn::actors::distributor::CreateTaskAttempt;
use apn::identity::{Identity, NodeId};
use apn::messages::codec::{self, FRAME_BYTES_MAX};
use apn::messages::envelope::{CLOCK_SKEW_MS_MAX, verify_frame};
use apn::messages::vibe::VIBE_MAX;
use apn::messages::*;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_bytes::ByteBuf;
use uuid::Uuid;

/// The receiver's clock in the `wire_frame` fuzz target (same constant there): seed frames
/// are sealed at this time so they get past the clock-skew check.
const FUZZ_NOW_MS: i64 = 1_767_225_600_000;

/// Where the `wire_frame` fuzz target's frames arrive (the same audience there).
fn receiver() -> Audience {
    Audience::Topic(Topic::Tasks)
}

fn verify(frame: &[u8], now_ms: i64) -> Result<VerifiedEnvelope, DropReason> {
    verify_frame(
        frame,
        now_ms,
        &EnvelopeLimits::default(),
        &mut ReplayCache::new(16),
        &receiver(),
    )
}

fn arb_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Instants from 1970 to 2100, at millisecond precision like the clocks that make them.
fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800_000).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

fn arb_vibe() -> impl Strategy<Value = Vibe> {
    (0..=VIBE_MAX.micros()).prop_map(Vibe::from_micros)
}

fn arb_node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(|key| NodeId::from_public_key(&key))
}

fn arb_bytes() -> impl Strategy<Value = ByteBuf> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(ByteBuf::from)
}

fn arb_sealed() -> impl Strategy<Value = Sealed> {
    (any::<u64>(), arb_bytes()).prop_map(|(nonce, ciphertext)| Sealed { nonce, ciphertext })
}

/// Finite usage figures: a NaN is a legal float on the wire but never equal to itself, so
/// value equality could not be asserted (the fuzz target compares encodings instead).
fn arb_usage() -> impl Strategy<Value = ComputeUsage> {
    (0.0..1e9f64, 0.0..1e9f64, 0.0..1e9f64).prop_map(|(cpu, memory, wall)| ComputeUsage {
        cpu_seconds: cpu,
        memory_gb_seconds: memory,
        wall_seconds: wall,
    })
}

fn arb_stage() -> impl Strategy<Value = ExecutionStage> {
    prop_oneof![
        Just(ExecutionStage::Setup),
        Just(ExecutionStage::Coding),
        Just(ExecutionStage::Testing),
        Just(ExecutionStage::Done),
    ]
}

fn arb_strings() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(".{0,16}", 0..4)
}

/// Messages of the variants with free-form fields (text, bytes, floats, times, amounts).
fn arb_message() -> impl Strategy<Value = APNMessage> {
    prop_oneof![
        any::<u64>().prop_map(|nonce| APNMessage::PingRequest(PingRequest { nonce })),
        any::<u64>().prop_map(|nonce| APNMessage::PingReply(PingReply { nonce })),
        (arb_uuid(), ".{0,64}").prop_map(|(task_id, reason)| {
            APNMessage::TaskCancelled(TaskCancelled { task_id, reason })
        }),
        (
            arb_uuid(),
            ".{0,24}",
            arb_strings(),
            any::<u64>(),
            any::<u64>(),
            arb_vibe(),
            ".{0,64}",
            arb_time(),
        )
            .prop_map(
                |(task_id, profile, capabilities, memory_mb, timeout_s, reward, hash, deadline)| {
                    APNMessage::TaskDistributionRequest(TaskDistributionRequest {
                        task_id,
                        executor_profile: profile,
                        requirements: TaskRequirements {
                            capabilities,
                            memory_mb,
                            timeout_s,
                        },
                        reward,
                        content_hash: hash,
                        bid_deadline: deadline,
                    })
                }
            ),
        (
            arb_uuid(),
            arb_node_id(),
            arb_vibe(),
            any::<u64>(),
            arb_strings(),
            arb_time()
        )
            .prop_map(|(task_id, bidder, price, duration, capabilities, until)| {
                APNMessage::TaskBid(TaskBid {
                    task_id,
                    bidder,
                    price,
                    estimated_duration_s: duration,
                    capabilities,
                    valid_until: until,
                    free_slots: None,
                })
            }),
        (
            arb_uuid(),
            arb_uuid(),
            arb_stage(),
            any::<u8>(),
            proptest::option::of(arb_sealed())
        )
            .prop_map(|(task_id, execution_id, stage, percent, current_action)| {
                APNMessage::ExecutionProgress(ExecutionProgress {
                    task_id,
                    execution_id,
                    stage,
                    percent,
                    current_action,
                })
            }),
        (arb_uuid(), arb_uuid(), any::<u64>(), arb_sealed()).prop_map(
            |(task_id, execution_id, sequence, lines)| {
                APNMessage::ExecutionLogs(ExecutionLogs {
                    task_id,
                    execution_id,
                    sequence,
                    lines,
                })
            }
        ),
        (
            arb_uuid(),
            arb_uuid(),
            arb_stage(),
            ".{0,64}",
            proptest::option::of(arb_sealed()),
            arb_usage()
        )
            .prop_map(|(task_id, execution_id, stage, error, detail, usage)| {
                APNMessage::ExecutionFailed(ExecutionFailed {
                    task_id,
                    execution_id,
                    stage,
                    error,
                    detail,
                    usage,
                })
            }),
        (
            arb_uuid(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            arb_sealed()
        )
            .prop_map(|(task_id, index, total, bytes, data)| {
                APNMessage::RepoChunk(RepoChunk {
                    task_id,
                    index,
                    total,
                    bytes,
                    data,
                })
            }),
    ]
}

fn arb_task_body() -> impl Strategy<Value = CreateTaskAttempt> {
    (
        ".{0,32}",
        ".{0,64}",
        "[A-Za-z0-9_]{0,16}",
        ".{0,32}",
        ".{0,16}",
        arb_vibe(),
        prop_oneof![Just("local"), Just("mesh"), Just("auto")],
        proptest::option::of(".{0,32}"),
    )
        .prop_map(
            |(title, prompt, profile, repo_path, base, reward, prefer, verify_command)| {
                serde_json::from_value(serde_json::json!({
                    "title": title,
                    "prompt": prompt,
                    "executor_profile": profile,
                    "repo_path": repo_path,
                    "base": base,
                    "reward": reward,
                    "prefer": prefer,
                    "verify_command": verify_command,
                }))
                .expect("every generated body is well formed")
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn messages_round_trip_through_the_codec(message in arb_message()) {
        let bytes = encode_message(&message).unwrap();
        prop_assert_eq!(decode_message(&bytes).unwrap(), message);
    }

    #[test]
    fn envelopes_round_trip_through_the_codec(
        version in any::<u16>(),
        msg_id in arb_uuid(),
        from in arb_bytes(),
        sent_at_ms in any::<i64>(),
        to in arb_bytes(),
        body in arb_bytes(),
        signature in arb_bytes(),
    ) {
        let to = Audience::Peer(to);
        let envelope = Envelope { version, msg_id, from, sent_at_ms, to, body, signature };
        let bytes = envelope.encode().unwrap();
        prop_assert_eq!(codec::decode::<Envelope>(&bytes, FRAME_BYTES_MAX).unwrap(), envelope);
    }

    #[test]
    fn sealed_messages_verify_unchanged(
        message in arb_message(),
        sent_at_ms in 0i64..4_102_444_800_000,
        skew in -CLOCK_SKEW_MS_MAX..=CLOCK_SKEW_MS_MAX,
    ) {
        let identity = Identity::ephemeral();
        let frame = Envelope::seal(&identity, &receiver(), &message, sent_at_ms).unwrap();
        let verified = verify(&frame, sent_at_ms + skew).unwrap();
        prop_assert_eq!(verified.message, message);
        prop_assert_eq!(verified.from_key, identity.public_key());
        prop_assert_eq!(verified.sent_at_ms, sent_at_ms);
    }

    /// One flipped bit anywhere in a sealed frame: dropped, or (when the flip changed only
    /// the CBOR spelling, say a text key into a byte-string key) the very same message.
    #[test]
    fn a_flipped_bit_never_verifies_as_another_message(
        message in arb_message(),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let identity = Identity::ephemeral();
        let mut frame = Envelope::seal(&identity, &receiver(), &message, FUZZ_NOW_MS).unwrap();
        let index = position.index(frame.len());
        frame[index] ^= 1 << bit;
        if let Ok(verified) = verify(&frame, FUZZ_NOW_MS) {
            prop_assert_eq!(verified.message, message);
            prop_assert_eq!(verified.from_key, identity.public_key());
        }
    }

    /// A correctly signed body that is not a message is dropped as malformed, never accepted
    /// and never a panic; one that is a message is accepted as that message.
    #[test]
    fn signed_bodies_verify_exactly_when_they_decode(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            arb_message().prop_map(|m| encode_message(&m).unwrap()),
        ],
    ) {
        let identity = Identity::ephemeral();
        let frame = Envelope::sign_body(&identity, &receiver(), body.clone(), FUZZ_NOW_MS).encode().unwrap();
        match (decode_message(&body), verify(&frame, FUZZ_NOW_MS)) {
            (Ok(expected), Ok(verified)) => prop_assert_eq!(verified.message, expected),
            (Err(_), Err(reason)) => prop_assert_eq!(reason, DropReason::Malformed),
            (decoded, verified) => prop_assert!(
                false,
                "decode {:?} but verify {:?}",
                decoded.map(|_| ()),
                verified.map(|_| ())
            ),
        }
    }

    #[test]
    fn task_bodies_round_trip_through_json(body in arb_task_body()) {
        let text = serde_json::to_vec(&body).unwrap();
        let again: CreateTaskAttempt = serde_json::from_slice(&text).unwrap();
        prop_assert_eq!(serde_json::to_vec(&again).unwrap(), text);
        prop_assert_eq!(
            again.check_fields().map_err(|e| e.to_string()),
            body.check_fields().map_err(|e| e.to_string())
        );
    }
}

/// Messages for the seed inputs: one of every variant, with realistic fields.
fn seed_messages(identity: &Identity) -> Vec<APNMessage> {
    let at = Utc.timestamp_millis_opt(FUZZ_NOW_MS).unwrap();
    apn::messages::samples::every_variant(identity, at)
}

/// Regenerate `fuzz/seeds/`. Run by hand after a wire or body format change:
/// `cargo test --test fuzz_regressions -- --ignored write_fuzz_seeds`. The sealed frames
/// carry fresh keys and ids each time, so the files change on every run.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };

    // wire_frame: the first byte picks raw frame (even) or body to sign (odd).
    let identity = Identity::ephemeral();
    for message in seed_messages(&identity) {
        let frame = Envelope::seal(&identity, &receiver(), &message, FUZZ_NOW_MS).unwrap();
        write(
            "wire_frame",
            &format!("frame-{}", message.kind()),
            &[&[0], &frame[..]].concat(),
        );
        let body = encode_message(&message).unwrap();
        write(
            "wire_frame",
            &format!("body-{}", message.kind()),
            &[&[1], &body[..]].concat(),
        );
    }
    write("wire_frame", "frame-garbage", b"\x00\xff\x00garbage");

    // http_task_body: what the panel and the CLI send, and a few near misses.
    let bodies = [
        (
            "minimal",
            r#"{"prompt":"fix the tests","executor_profile":"SHELL","repo_path":"/tmp/repo","reward":"1"}"#,
        ),
        (
            "full",
            r#"{"title":"Fix","prompt":"make cargo test pass","executor_profile":"CLAUDE_CODE","repo_path":"/srv/repo","base":"main","requirements":{"capabilities":["rust"],"memory_mb":2048,"timeout_s":600},"reward":"12.5","prefer":"mesh","verify_command":"cargo test"}"#,
        ),
        (
            "number-reward",
            r#"{"prompt":"x","executor_profile":"SHELL","repo_path":"/","reward":0.000001,"prefer":"local"}"#,
        ),
        (
            "integer-reward",
            r#"{"prompt":"x","executor_profile":"SHELL","repo_path":"/","reward":3,"base":"HEAD~1","verify_command":null}"#,
        ),
        (
            "bad-reward",
            r#"{"prompt":"x","executor_profile":"SHELL","repo_path":"/","reward":"-1"}"#,
        ),
        (
            "unknown-field",
            r#"{"prompt":"x","executor_profile":"SHELL","repo_path":"/","reward":"1","extra":true}"#,
        ),
        (
            "bad-base",
            r#"{"prompt":"\u00e9t\u00e9","executor_profile":"bad profile","repo_path":"/","reward":"1e3","base":"--upload-pack=x"}"#,
        ),
    ];
    for (name, body) in bodies {
        write("http_task_body", name, body.as_bytes());
    }

    // config_toml: the documented file, a small one, and one with environment overrides.
    let documented =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/apn.toml")).unwrap();
    write("config_toml", "documented", &documented);
    write(
        "config_toml",
        "small",
        b"[node]\nport = 4001\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\n\n[economics]\nmin_task_reward = \"0.5\"\n\n[http]\nbind = \"none\"\n",
    );
    write(
        "config_toml",
        "environment",
        b"[resources]\nmax_concurrent_tasks = 2\n---\nAPN_RELAY_URL=nats://10.0.0.2:4222\nAPN_NODE_MDNS=false\nAPN_ACCEPT_PEERS=[\"a\"]\n",
    );
}
