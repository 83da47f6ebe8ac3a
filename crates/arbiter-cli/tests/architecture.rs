//! The dependency rules each crate's README states, checked against the manifests: a
//! crate that gains a forbidden dependency (dev-dependencies included) fails here.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failing unwrap is a failing test"
)]

use std::collections::BTreeSet;
use std::path::Path;

/// Every dependency a manifest names, in any dependency table.
fn dependencies(krate: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let mut names = BTreeSet::new();
    let mut add = |table: &toml::Table| {
        for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(deps) = table.get(kind).and_then(toml::Value::as_table) {
                names.extend(deps.keys().cloned());
            }
        }
    };
    add(&manifest);
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            add(target);
        }
    }
    names
}

fn arbiter_crates(krate: &str) -> BTreeSet<String> {
    dependencies(krate)
        .into_iter()
        .filter(|d| d.starts_with("arbiter-"))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn each_crate_depends_only_on_the_crates_below_it() {
    assert_eq!(arbiter_crates("arbiter-core"), set(&[]));
    assert_eq!(arbiter_crates("arbiter-identity"), set(&["arbiter-core"]));
    assert_eq!(arbiter_crates("arbiter-store"), set(&["arbiter-core"]));
    assert_eq!(
        arbiter_crates("arbiter-lifecycle"),
        set(&["arbiter-core", "arbiter-store"])
    );
    assert_eq!(
        arbiter_crates("arbiter-service"),
        set(&["arbiter-core", "arbiter-store"])
    );
    assert_eq!(
        arbiter_crates("arbiter-mcp"),
        set(&[
            "arbiter-core",
            "arbiter-identity",
            "arbiter-service",
            "arbiter-store"
        ])
    );
    assert!(!arbiter_crates("arbiter-server").contains("arbiter-cli"));
}

#[test]
fn the_libraries_keep_away_from_what_is_not_theirs() {
    let never = |krate: &str, forbidden: &[&str]| {
        let deps = dependencies(krate);
        for name in forbidden {
            assert!(!deps.contains(*name), "{krate} must not depend on {name}");
        }
    };
    // No network, no database, no runtime in the engine or the credentials.
    never(
        "arbiter-core",
        &["tokio", "rusqlite", "reqwest", "axum", "hyper"],
    );
    never(
        "arbiter-identity",
        &["tokio", "rusqlite", "reqwest", "axum", "hyper"],
    );
    // The decision service is for every caller, HTTP or not.
    never(
        "arbiter-service",
        &["axum", "hyper", "hyper-util", "tower", "reqwest"],
    );
    never("arbiter-lifecycle", &["axum", "hyper", "reqwest"]);
    // The MCP gateway decides through the decision service, never through the server
    // (its own listeners, the Streamable HTTP transport and the metrics, on axum).
    never(
        "arbiter-mcp",
        &["arbiter-server", "arbiter-cli", "arbiter-lifecycle"],
    );
    never("arbiter-store", &["axum", "hyper", "reqwest"]);
}
