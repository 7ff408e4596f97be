//! The wire decoder and the envelope checks, as a peer's frame meets them.
//!
//! The first input byte picks the mode:
//! - even: the rest is a raw frame from the network. Whatever it holds, `verify_frame`
//!   returns, never panics; a frame it accepts carries a message that re-encodes and decodes
//!   to the same bytes, and the same frame a second time is refused as a replay.
//! - odd: the rest is a message body, correctly signed by an honest key. It is accepted
//!   exactly when it decodes as a message, as that message; otherwise it is dropped as
//!   malformed.
#![no_main]

use std::sync::LazyLock;

use apn::identity::Identity;
use apn::messages::envelope::verify_frame;
use apn::messages::{
    Audience, DropReason, Envelope, EnvelopeLimits, ReplayCache, Topic, decode_message,
    encode_message,
};
use libfuzzer_sys::fuzz_target;

/// The receiver's clock, fixed so seed frames sealed at this time pass the skew check (the
/// same constant as in `tests/fuzz_regressions.rs`).
const FUZZ_NOW_MS: i64 = 1_767_225_600_000;

static SIGNER: LazyLock<Identity> = LazyLock::new(Identity::ephemeral);

/// Where frames arrive (the same audience as in `tests/fuzz_regressions.rs`).
fn receiver() -> Audience {
    Audience::Topic(Topic::Tasks)
}

fn check_raw_frame(frame: &[u8]) {
    let limits = EnvelopeLimits::default();
    let mut replay_cache = ReplayCache::new(16);
    let Ok(verified) = verify_frame(frame, FUZZ_NOW_MS, &limits, &mut replay_cache, &receiver()) else {
        return;
    };
    let bytes = encode_message(&verified.message).expect("an accepted message re-encodes");
    let again = decode_message(&bytes).expect("a re-encoded message decodes");
    assert_eq!(
        encode_message(&again).expect("it re-encodes again"),
        bytes,
        "decode and encode disagree"
    );
    assert_eq!(
        verify_frame(frame, FUZZ_NOW_MS, &limits, &mut replay_cache, &receiver()).err(),
        Some(DropReason::Replayed),
        "the same frame twice must be a replay"
    );
}

fn check_signed_body(body: &[u8]) {
    let limits = EnvelopeLimits::default();
    let Ok(frame) = Envelope::sign_body(&SIGNER, &receiver(), body.to_vec(), FUZZ_NOW_MS).encode() else {
        return;
    };
    if frame.len() > limits.frame_bytes_max {
        return;
    }
    let verified = verify_frame(&frame, FUZZ_NOW_MS, &limits, &mut ReplayCache::new(16), &receiver());
    match (decode_message(body), verified) {
        (Ok(expected), Ok(verified)) => {
            assert_eq!(verified.from_key, SIGNER.public_key());
            assert_eq!(
                encode_message(&verified.message).ok(),
                encode_message(&expected).ok(),
                "verified a different message than the body holds"
            );
        }
        (Err(_), Err(reason)) => assert_eq!(reason, DropReason::Malformed),
        (decoded, verified) => panic!(
            "decode {:?} but verify {:?}",
            decoded.map(|_| ()),
            verified.map(|_| ())
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_raw_frame(rest);
    } else {
        check_signed_body(rest);
    }
});
