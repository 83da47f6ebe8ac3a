//! What candidates found in shadow, as the store keeps it: tallies add up across writes
//! (counts, the time span, examples up to the limit, groups up to the limit and the rest
//! as overflow); a reload keeps a version's counts; each version stands apart, and the
//! one loaded last is the default; a read-only store reads it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use arbiter_store::{
    CandidateLoad, ShadowCounts, ShadowGroup, ShadowLimits, ShadowTally, Store, StoreError,
};
use jiff::Timestamp;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn load(version: &str, when: &str) -> CandidateLoad {
    CandidateLoad {
        version: version.to_owned(),
        dir: format!("/packs/{version}"),
        sample: 0.25,
        at: at(when),
    }
}

fn breaks(key: &str, n: u64, examples: &[&str]) -> ShadowGroup {
    ShadowGroup {
        key: key.to_owned(),
        changes: ShadowCounts {
            breaks: n,
            ..ShadowCounts::default()
        },
        examples: examples.iter().map(|e| (*e).to_owned()).collect(),
    }
}

fn tally(version: &str, first: &str, last: &str, principals: Vec<ShadowGroup>) -> ShadowTally {
    let n: u64 = principals.iter().map(|g| g.changes.breaks).sum();
    ShadowTally {
        version: version.to_owned(),
        changes: ShadowCounts {
            same: 1,
            breaks: n,
            ..ShadowCounts::default()
        },
        errored: 1,
        dropped: 2,
        first: Some(at(first)),
        last: Some(at(last)),
        by_rule: vec![breaks("rule.a", n, &[])],
        by_principal: principals,
    }
}

#[test]
fn tallies_add_up_within_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .record_candidate(&load("v1", "2026-11-26T09:00:00Z"))
        .unwrap();
    let limits = ShadowLimits {
        examples: 2,
        groups: 2,
    };
    let mut writer = store.candidate_writer().unwrap();
    writer
        .add(
            &tally(
                "v1",
                "2026-11-26T10:00:00Z",
                "2026-11-26T10:00:05Z",
                vec![breaks("p1", 1, &["d1"]), breaks("p2", 1, &["d2"])],
            ),
            limits,
        )
        .unwrap();
    writer
        .add(
            &tally(
                "v1",
                "2026-11-26T09:59:00Z",
                "2026-11-26T10:00:01Z",
                vec![breaks("p1", 2, &["d3", "d4"]), breaks("p3", 4, &["d5"])],
            ),
            limits,
        )
        .unwrap();
    // Loaded again (a restart, a reload of the same files): the counts go on.
    store
        .record_candidate(&load("v1", "2026-11-26T11:00:00Z"))
        .unwrap();

    let report = store.candidate_report(None).unwrap().unwrap();
    assert_eq!(report.candidate.version, "v1");
    assert_eq!(report.candidate.dir, "/packs/v1");
    assert_eq!(report.candidate.sample, 0.25);
    assert_eq!(report.candidate.first_loaded_at, at("2026-11-26T09:00:00Z"));
    assert_eq!(report.candidate.loaded_at, at("2026-11-26T11:00:00Z"));
    assert_eq!(report.shadowed, 10);
    assert_eq!(report.changes.breaks, 8);
    assert_eq!(report.changes.same, 2);
    assert_eq!((report.errored, report.dropped), (2, 4));
    assert_eq!(report.first, Some(at("2026-11-26T09:59:00Z")));
    assert_eq!(report.last, Some(at("2026-11-26T10:00:05Z")));
    // p3 came when two groups were kept: its 4 breaks are overflow.
    assert_eq!(
        report.by_principal,
        vec![breaks("p1", 3, &["d1", "d3"]), breaks("p2", 1, &["d2"])]
    );
    assert_eq!(report.overflow.by_principal, 4);
    assert_eq!(report.by_rule, vec![breaks("rule.a", 8, &[])]);
    assert_eq!(report.overflow.by_rule, 0);

    // Another version stands apart, and is the default once loaded last.
    store
        .record_candidate(&load("v2", "2026-11-26T12:00:00Z"))
        .unwrap();
    let latest = store.candidate_report(None).unwrap().unwrap();
    assert_eq!(latest.candidate.version, "v2");
    assert_eq!(latest.shadowed, 0);
    assert!(latest.by_principal.is_empty() && latest.first.is_none());
    let older = store.candidate_report(Some("v1")).unwrap().unwrap();
    assert_eq!(older, report);
    assert!(store.candidate_report(Some("v3")).unwrap().is_none());
    drop(writer);
    drop(store);
    let read_only = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(
        read_only.candidate_report(Some("v1")).unwrap().unwrap(),
        report
    );
    assert!(matches!(
        read_only.record_candidate(&load("v4", "2026-11-26T13:00:00Z")),
        Err(StoreError::ReadOnly { .. })
    ));
}

#[test]
fn a_tally_for_a_candidate_never_loaded_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let error = store
        .candidate_writer()
        .unwrap()
        .add(
            &tally(
                "nope",
                "2026-11-26T10:00:00Z",
                "2026-11-26T10:00:00Z",
                vec![],
            ),
            ShadowLimits::default(),
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no candidate \"nope\" was recorded: record its load first"
    );
    assert!(store.candidate_report(None).unwrap().is_none());
}
