use serde_json::json;

use super::{decide, Step};

fn route(id: &str) -> serde_json::Value {
    json!({
        "id": id, "name": id, "domains": [], "dynos": [], "certs": [],
        "settings": { "maintenance": false, "session_affinity": false,
                      "error_page_url": null, "maintenance_page_url": null },
    })
}

fn change(revision: u64, changes: serde_json::Value) -> Vec<u8> {
    json!({ "type": "change", "revision": revision, "changes": changes })
        .to_string()
        .into_bytes()
}

#[test]
fn heartbeats_and_blank_lines_change_nothing() {
    assert_eq!(
        decide(Some(3), br#"{"type":"heartbeat","revision":3}"#),
        Step::Idle
    );
    assert_eq!(decide(Some(3), b"  "), Step::Idle);
}

#[test]
fn the_next_revision_is_applied_whole() {
    let line = change(
        4,
        json!([
            { "key": "routes/a", "value": route("a") },
            { "key": "routes/b", "value": null },
            { "key": "apps/a", "value": { "ignored": true } },
        ]),
    );
    let Step::Apply { revision, updates } = decide(Some(3), &line) else {
        panic!("not applied");
    };
    assert_eq!(revision, 4);
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].0, "a");
    assert_eq!(updates[0].1.as_ref().map(|r| r.name.as_str()), Some("a"));
    assert_eq!(updates[1], ("b".to_string(), None));
    // An empty change still moves the revision on.
    assert_eq!(
        decide(Some(4), &change(5, json!([]))),
        Step::Apply {
            revision: 5,
            updates: vec![]
        }
    );
}

#[test]
fn what_cannot_be_used_whole_is_a_resync_not_a_skip() {
    // One good entry and one that does not decode: nothing is applied.
    let line = change(
        4,
        json!([
            { "key": "routes/a", "value": route("a") },
            { "key": "routes/b", "value": { "id": "b", "dynos": "many" } },
        ]),
    );
    assert!(matches!(decide(Some(3), &line), Step::Resync(why) if why.contains("app b")));
    // A gap, a repeat, an event kind from a newer control plane, garbage.
    assert!(matches!(
        decide(Some(3), &change(5, json!([]))),
        Step::Resync(_)
    ));
    assert!(matches!(
        decide(Some(3), &change(3, json!([]))),
        Step::Resync(_)
    ));
    assert!(matches!(
        decide(Some(3), br#"{"type":"compacted","revision":9}"#),
        Step::Resync(_)
    ));
    assert!(matches!(decide(Some(3), b"{not json"), Step::Resync(_)));
    assert!(matches!(
        decide(Some(3), br#"{"type":"resync","revision":9,"oldest":7}"#),
        Step::Resync(_)
    ));
}
