//! The faucet's pure policy: requests, the book of grants, the hourly window.

#![allow(clippy::unwrap_used)]
use super::*;

const NOW: i64 = 1_700_000_000_000;

fn policy(grants_per_hour: u32) -> FaucetPolicy {
    FaucetPolicy {
        amount: Vibe::from_whole(10),
        grants_per_hour,
    }
}

#[test]
fn a_signed_request_opens_to_its_account() {
    let node = Identity::ephemeral();
    let bytes = sign_request(&node, NOW).unwrap();
    assert!(bytes.len() <= MAX_REQUEST_BYTES);
    assert_eq!(open_request(&bytes, NOW), Ok(node.public_key()));
    let book = FaucetBook::new(&policy(5));
    assert_eq!(decide(&book, &bytes, NOW + 1000), Ok(node.public_key()));
}

#[test]
fn a_request_naming_another_account_is_refused() {
    let thief = Identity::ephemeral();
    let victim = Identity::ephemeral();
    let bytes = sign_request(&thief, NOW).unwrap();
    let mut signed: SignedRequest = codec::decode(&bytes, MAX_REQUEST_BYTES).unwrap();
    signed.request = codec::encode(&FaucetRequest {
        account: victim.public_key(),
        time_ms: NOW,
    })
    .unwrap();
    let forged = codec::encode(&signed).unwrap();
    assert!(matches!(
        open_request(&forged, NOW),
        Err(Refusal::BadRequest { .. })
    ));
}

#[test]
fn a_signature_from_another_domain_is_refused() {
    let node = Identity::ephemeral();
    let request = codec::encode(&FaucetRequest {
        account: node.public_key(),
        time_ms: NOW,
    })
    .unwrap();
    // Signed without the faucet's domain tag (as if lifted from another protocol).
    let signature = node.sign(&request);
    let bytes = codec::encode(&SignedRequest { request, signature }).unwrap();
    assert!(matches!(
        open_request(&bytes, NOW),
        Err(Refusal::BadRequest { .. })
    ));
}

#[test]
fn stale_future_oversized_and_garbage_requests_are_refused() {
    let node = Identity::ephemeral();
    for time in [
        NOW - MAX_CLOCK_SKEW_MS - 1,
        NOW + MAX_CLOCK_SKEW_MS + 1,
        i64::MIN,
        i64::MAX,
    ] {
        let bytes = sign_request(&node, time).unwrap();
        assert!(
            matches!(open_request(&bytes, NOW), Err(Refusal::BadRequest { .. })),
            "{time}"
        );
    }
    let edge = sign_request(&node, NOW - MAX_CLOCK_SKEW_MS).unwrap();
    assert!(open_request(&edge, NOW).is_ok());
    for bytes in [
        vec![0u8; MAX_REQUEST_BYTES + 1],
        b"junk".to_vec(),
        Vec::new(),
    ] {
        match open_request(&bytes, NOW) {
            Err(Refusal::BadRequest { detail }) => assert!(detail.len() <= MAX_DETAIL_BYTES),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn one_grant_per_account() {
    let mut book = FaucetBook::new(&policy(5));
    let account = [7; 32];
    assert_eq!(book.decide(&account, NOW), Ok(()));
    book.record(account, NOW);
    assert!(book.was_granted(&account));
    assert_eq!(book.decide(&account, NOW), Err(Refusal::AlreadyGranted));
    // Still refused long after: the rule is forever, not per window.
    assert_eq!(
        book.decide(&account, NOW + 100 * HOUR_MS),
        Err(Refusal::AlreadyGranted)
    );
    assert_eq!(book.decide(&[8; 32], NOW), Ok(()));
}

#[test]
fn the_window_allows_n_grants_an_hour_and_says_when_to_retry() {
    let mut book = FaucetBook::new(&policy(2));
    book.record([1; 32], NOW);
    book.record([2; 32], NOW + 1_000);
    assert_eq!(
        book.decide(&[3; 32], NOW + 2_000),
        Err(Refusal::RateLimited {
            retry_after_ms: u64::try_from(HOUR_MS - 2_000).unwrap()
        })
    );
    // An hour after the first grant its slot is free again.
    assert_eq!(book.decide(&[3; 32], NOW + HOUR_MS), Ok(()));
    book.record([3; 32], NOW + HOUR_MS);
    // Now the second and third fill the window until an hour after the second.
    assert_eq!(
        book.decide(&[4; 32], NOW + HOUR_MS + 10),
        Err(Refusal::RateLimited {
            retry_after_ms: 990
        })
    );
    // Already granted is said before rate limited: asking again will never help.
    assert_eq!(
        book.decide(&[1; 32], NOW + HOUR_MS + 10),
        Err(Refusal::AlreadyGranted)
    );
}

#[test]
fn grants_recorded_out_of_order_keep_the_latest_times() {
    let mut book = FaucetBook::new(&policy(2));
    book.record([1; 32], NOW + 5_000);
    book.record([2; 32], NOW - 10 * HOUR_MS);
    book.record([3; 32], NOW + 6_000);
    // The two latest are kept: the window is full until an hour after NOW + 5 s.
    assert_eq!(
        book.decide(&[4; 32], NOW + 7_000),
        Err(Refusal::RateLimited {
            retry_after_ms: u64::try_from(HOUR_MS - 2_000).unwrap()
        })
    );
    assert_eq!(book.recent.len(), 2);
}

#[test]
fn policies_that_cannot_grant_are_refused() {
    assert!(policy(1).validate().is_ok());
    assert!(policy(0).validate().is_err());
    assert!(policy(MAX_GRANTS_PER_HOUR + 1).validate().is_err());
    let nothing = FaucetPolicy {
        amount: Vibe::ZERO,
        grants_per_hour: 1,
    };
    assert!(nothing.validate().is_err());
    // A book for a zero window refuses rather than dividing by or indexing into nothing.
    assert!(matches!(
        FaucetBook::new(&policy(0)).decide(&[1; 32], NOW),
        Err(Refusal::RateLimited { .. })
    ));
}

#[test]
fn answers_round_trip_as_json() {
    for answer in [
        FaucetAnswer::Granted {
            sequence: 42,
            amount: Vibe::from_whole(10),
        },
        FaucetAnswer::Refused {
            reason: Refusal::AlreadyGranted,
        },
        FaucetAnswer::Refused {
            reason: Refusal::RateLimited {
                retry_after_ms: 1234,
            },
        },
        FaucetAnswer::Refused {
            reason: Refusal::bad("x".repeat(1000)),
        },
        FaucetAnswer::Refused {
            reason: Refusal::Unavailable,
        },
    ] {
        let bytes = serde_json::to_vec(&answer).unwrap();
        assert!(bytes.len() <= MAX_ANSWER_BYTES, "{}", bytes.len());
        assert_eq!(
            serde_json::from_slice::<FaucetAnswer>(&bytes).unwrap(),
            answer
        );
    }
}
