//! `POST /api/tasks` bodies: the JSON the handler deserialises and the field checks it runs
//! before any work is created. Any bytes give a value or a serde error, never a panic; a body
//! that parses serialises back to JSON that parses to the same body with the same verdict;
//! an accepted body's base reference is judged without a panic too.
#![no_main]

use apn::actors::distributor::CreateTaskAttempt;
use apn::workspace::check_reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<CreateTaskAttempt>(data) else {
        return;
    };
    let verdict = body.check_fields().map_err(|e| e.to_string());
    let text = serde_json::to_vec(&body).expect("a parsed body serialises");
    let again: CreateTaskAttempt =
        serde_json::from_slice(&text).expect("a serialised body parses again");
    assert_eq!(
        serde_json::to_vec(&again).expect("and serialises again"),
        text,
        "JSON round trip changed the body"
    );
    assert_eq!(
        again.check_fields().map_err(|e| e.to_string()),
        verdict,
        "JSON round trip changed the verdict"
    );
    if verdict.is_ok() {
        let _ = check_reference(&body.base);
    }
});
