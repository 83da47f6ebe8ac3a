//! Promotion and demotion as source edits: each test sets a mode in a small pack, writes
//! the edit and compares the file with the expected text, byte for byte.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::path::Path;

use arbiter_core::Pack;
use arbiter_core::rule::Mode;
use arbiter_core::rule::RuleRef;
use arbiter_lifecycle::promote::{PromoteError, set_mode};
use tempfile::TempDir;

const CONFIG: &str = "[defaults]\nmode = \"audit\"\n";

/// Principal types `Agent` and `CiJob`, one action, a `Doc` resource.
const SCHEMA: &str = r#"
entity Agent;
entity CiJob;
entity Doc { public: Bool };
action read appliesTo { principal: [Agent, CiJob], resource: [Doc], context: { note: String } };
"#;

/// A pack with a schema, `arbiter.toml` and `policies/rules.cedar`.
fn pack_with(config: &str, policies: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("arbiter.toml"), config).unwrap();
    fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    // A pack with no policy does not load; these scope tests need one that decides nothing.
    let policies = if policies.trim().is_empty() {
        "@id(\"nothing\")\npermit (principal, action, resource) when { false };\n"
    } else {
        policies
    };
    fs::write(dir.path().join("policies/rules.cedar"), policies).unwrap();
    dir
}

/// Sets the mode, writes the edit, and returns the file it changed as it now is on disk.
fn promote(dir: &Path, target: &str, to: Mode) -> String {
    let pack = Pack::load(dir).unwrap();
    let edit = set_mode(&pack, &RuleRef::parse(target), to).unwrap();
    edit.write(dir).unwrap();
    let written = fs::read_to_string(dir.join(&edit.file)).unwrap();
    assert_eq!(written, edit.after);
    let reloaded = Pack::load(dir).unwrap();
    match RuleRef::parse(target) {
        RuleRef::Rule(id) => assert_eq!(reloaded.rule(&id).unwrap().mode, Some(to)),
        RuleRef::DefaultDeny(ty) => {
            assert_eq!(reloaded.default_deny_scopes().get(&ty), Some(&to));
        }
    }
    written
}

fn error(dir: &Path, target: &str, to: Mode) -> PromoteError {
    let pack = Pack::load(dir).unwrap();
    set_mode(&pack, &RuleRef::parse(target), to).unwrap_err()
}

#[test]
fn an_existing_mode_is_rewritten() {
    let pack = pack_with(
        CONFIG,
        r#"// Public docs only.
@id("docs.public-only")
@mode("audit")
@severity("high")
forbid (principal, action, resource)
when { !resource.public };
"#,
    );
    assert_eq!(
        promote(pack.path(), "docs.public-only", Mode::Enforce),
        r#"// Public docs only.
@id("docs.public-only")
@mode("enforce")
@severity("high")
forbid (principal, action, resource)
when { !resource.public };
"#
    );
}

#[test]
fn a_missing_mode_is_added_after_the_id_with_its_indentation() {
    let pack = pack_with(
        CONFIG,
        "  // Indented, as some editors leave it.\n  @owner(\"docs\")\n  @id(\"docs.public-only\")\n  @severity(\"high\")\n  forbid (principal, action, resource)\n  when { !resource.public };\n",
    );
    let loaded = Pack::load(pack.path()).unwrap();
    let edit = set_mode(
        &loaded,
        &RuleRef::Rule("docs.public-only".to_owned()),
        Mode::Warn,
    )
    .unwrap();
    assert_eq!((edit.from, edit.to), (Mode::Audit, Mode::Warn));
    assert_eq!(
        promote(pack.path(), "docs.public-only", Mode::Warn),
        "  // Indented, as some editors leave it.\n  @owner(\"docs\")\n  @id(\"docs.public-only\")\n  @mode(\"warn\")\n  @severity(\"high\")\n  forbid (principal, action, resource)\n  when { !resource.public };\n"
    );
}

#[test]
fn annotations_on_one_line() {
    let pack = pack_with(
        CONFIG,
        r#"@id("a") @mode("audit") @effect("deny")
forbid (principal, action, resource) when { !resource.public };

@owner("docs") @id("b") @severity("low") // no mode yet
forbid (principal, action, resource) when { resource.public };

@id("c") forbid (principal is CiJob, action, resource);
"#,
    );
    promote(pack.path(), "a", Mode::Enforce);
    promote(pack.path(), "b", Mode::Enforce);
    assert_eq!(
        promote(pack.path(), "c", Mode::Enforce),
        r#"@id("a") @mode("enforce") @effect("deny")
forbid (principal, action, resource) when { !resource.public };

@owner("docs") @id("b") @severity("low") // no mode yet
@mode("enforce")
forbid (principal, action, resource) when { resource.public };

@id("c") @mode("enforce") forbid (principal is CiJob, action, resource);
"#
    );
}

#[test]
fn odd_spacing_is_kept() {
    let pack = pack_with(
        CONFIG,
        "@id (  \"a\" )\n@mode ( \"audit\" )\t@effect(\"deny\")\nforbid(principal,action,resource);\n",
    );
    assert_eq!(
        promote(pack.path(), "a", Mode::Warn),
        "@id (  \"a\" )\n@mode ( \"warn\" )\t@effect(\"deny\")\nforbid(principal,action,resource);\n"
    );
}

#[test]
fn decoys_in_comments_and_strings_are_left_alone() {
    let policies = r#"// The next rule was @mode("audit") until @id("target") replaced it; see @mode("warn").
@id("decoy")
@mode("audit")
forbid (principal, action, resource)
when { context.note == "@id(\"target\") @mode(\"audit\"); forbid" };

// @id("target")
@id("target")
forbid (principal is Agent, action, resource)
when { context.note like "*@mode(\"audit\")*" };
"#;
    let pack = pack_with(CONFIG, policies);
    assert_eq!(
        promote(pack.path(), "target", Mode::Enforce),
        r#"// The next rule was @mode("audit") until @id("target") replaced it; see @mode("warn").
@id("decoy")
@mode("audit")
forbid (principal, action, resource)
when { context.note == "@id(\"target\") @mode(\"audit\"); forbid" };

// @id("target")
@id("target")
@mode("enforce")
forbid (principal is Agent, action, resource)
when { context.note like "*@mode(\"audit\")*" };
"#
    );
    assert_eq!(
        promote(pack.path(), "target", Mode::Audit),
        policies.replace(
            "@id(\"target\")\nforbid",
            "@id(\"target\")\n@mode(\"audit\")\nforbid"
        )
    );
}

#[test]
fn crlf_line_endings_are_kept() {
    let pack = pack_with(
        CONFIG,
        "// Windows line endings.\r\n@id(\"a\")\r\n@mode(\"audit\")\r\nforbid (principal, action, resource);\r\n\r\n@id(\"b\")\r\nforbid (principal is Agent, action, resource);\r\n",
    );
    promote(pack.path(), "a", Mode::Enforce);
    assert_eq!(
        promote(pack.path(), "b", Mode::Warn),
        "// Windows line endings.\r\n@id(\"a\")\r\n@mode(\"enforce\")\r\nforbid (principal, action, resource);\r\n\r\n@id(\"b\")\r\n@mode(\"warn\")\r\nforbid (principal is Agent, action, resource);\r\n"
    );
}

#[test]
fn only_the_target_policy_changes() {
    let pack = pack_with(
        CONFIG,
        r#"@id("first")
@mode("audit")
forbid (principal is Agent, action, resource);

@id("allow-public")
permit (principal, action, resource) when { resource.public };

@id("second")
@mode("audit")
forbid (principal is CiJob, action, resource);

@id("third")
@mode("audit")
forbid (principal, action, resource) when { context.note == "second" };
"#,
    );
    assert_eq!(
        promote(pack.path(), "second", Mode::Enforce),
        r#"@id("first")
@mode("audit")
forbid (principal is Agent, action, resource);

@id("allow-public")
permit (principal, action, resource) when { resource.public };

@id("second")
@mode("enforce")
forbid (principal is CiJob, action, resource);

@id("third")
@mode("audit")
forbid (principal, action, resource) when { context.note == "second" };
"#
    );
}

#[test]
fn a_scope_is_set_in_the_inline_table_keeping_comments() {
    let config = r#"# A fixture pack.
[defaults]
mode = "audit"   # new forbids start in audit

[default_deny]
# Agents have a complete allow-list; CI jobs are still being learned.
mode = "audit"
principal_types = { Agent = "enforce" }   # reviewed in January

[log]
mask = []
"#;
    let pack = pack_with(config, "");
    assert_eq!(
        promote(pack.path(), "default-deny:CiJob", Mode::Enforce),
        r#"# A fixture pack.
[defaults]
mode = "audit"   # new forbids start in audit

[default_deny]
# Agents have a complete allow-list; CI jobs are still being learned.
mode = "audit"
principal_types = { Agent = "enforce", CiJob = "enforce" }   # reviewed in January

[log]
mask = []
"#
    );
    // Back to the section's mode: still written, explicit is reviewable.
    assert_eq!(
        promote(pack.path(), "default-deny:Agent", Mode::Audit),
        r#"# A fixture pack.
[defaults]
mode = "audit"   # new forbids start in audit

[default_deny]
# Agents have a complete allow-list; CI jobs are still being learned.
mode = "audit"
principal_types = { Agent = "audit", CiJob = "enforce" }   # reviewed in January

[log]
mask = []
"#
    );
}

#[test]
fn a_scope_is_set_in_a_config_without_default_deny() {
    let pack = pack_with(
        "# Nothing about default-deny yet.\n[defaults]\nmode = \"audit\"\n",
        "",
    );
    assert_eq!(
        promote(pack.path(), "default-deny:Agent", Mode::Enforce),
        "# Nothing about default-deny yet.\n[defaults]\nmode = \"audit\"\n\n[default_deny]\nprincipal_types = { Agent = \"enforce\" }\n"
    );

    let crlf = pack_with("[defaults]\r\nmode = \"audit\"\r\n", "");
    assert_eq!(
        promote(crlf.path(), "default-deny:CiJob", Mode::Warn),
        "[defaults]\r\nmode = \"audit\"\r\n\r\n[default_deny]\r\nprincipal_types = { CiJob = \"warn\" }\r\n"
    );

    // No arbiter.toml at all (the defaults apply): the edit creates it.
    let bare = pack_with("", "");
    fs::remove_file(bare.path().join("arbiter.toml")).unwrap();
    assert_eq!(
        promote(bare.path(), "default-deny:Agent", Mode::Enforce),
        "[default_deny]\nprincipal_types = { Agent = \"enforce\" }\n"
    );
}

#[test]
fn a_scope_is_set_in_a_principal_types_table() {
    let pack = pack_with(
        "[default_deny]\nmode = \"warn\"\n\n[default_deny.principal_types]\nAgent = \"enforce\"  # done\n",
        "",
    );
    promote(pack.path(), "default-deny:Agent", Mode::Audit);
    assert_eq!(
        promote(pack.path(), "default-deny:CiJob", Mode::Audit),
        "[default_deny]\nmode = \"warn\"\n\n[default_deny.principal_types]\nAgent = \"audit\"  # done\nCiJob = \"audit\"\n"
    );
}

#[test]
fn errors() {
    let pack = pack_with(
        "[default_deny]\nprincipal_types = { Agent = \"enforce\" }\n",
        r#"@id("allow-public")
permit (principal, action, resource) when { resource.public };

@id("audited")
forbid (principal is CiJob, action, resource);
"#,
    );
    let dir = pack.path();
    assert!(matches!(
        error(dir, "nope", Mode::Enforce),
        PromoteError::UnknownRule(id) if id == "nope"
    ));
    let permit = error(dir, "allow-public", Mode::Enforce);
    assert!(matches!(&permit, PromoteError::Permit(id) if id == "allow-public"));
    assert!(
        permit
            .to_string()
            .starts_with("`allow-public` is a permit: permits widen access and have no mode")
    );
    let already = error(dir, "audited", Mode::Audit);
    assert_eq!(already.to_string(), "`audited` is already in audit");
    assert!(matches!(
        already,
        PromoteError::AlreadyInMode { target, mode: Mode::Audit } if target == "audited"
    ));
    assert!(matches!(
        error(dir, "default-deny:Agent", Mode::Enforce),
        PromoteError::AlreadyInMode {
            mode: Mode::Enforce,
            ..
        }
    ));
    assert!(matches!(
        error(dir, "default-deny:Robot", Mode::Enforce),
        PromoteError::UnknownScope(name) if name == "default-deny:Robot"
    ));
}

#[test]
fn the_diff_is_a_unified_diff_with_three_lines_of_context() {
    let pack = pack_with(
        CONFIG,
        "// one\n// two\n// three\n// four\n@id(\"a\")\n@mode(\"audit\")\n@effect(\"deny\")\n@severity(\"low\")\n@owner(\"x\")\n@reason(\"y\")\nforbid (principal, action, resource);\n",
    );
    let loaded = Pack::load(pack.path()).unwrap();
    let edit = set_mode(&loaded, &RuleRef::Rule("a".to_owned()), Mode::Enforce).unwrap();
    assert_eq!(
        edit.diff(),
        "--- a/policies/rules.cedar\n+++ b/policies/rules.cedar\n@@ -3,7 +3,7 @@\n // three\n // four\n @id(\"a\")\n-@mode(\"audit\")\n+@mode(\"enforce\")\n @effect(\"deny\")\n @severity(\"low\")\n @owner(\"x\")\n"
    );
}

#[test]
fn write_keeps_permissions_and_refuses_a_file_changed_since() {
    let pack = pack_with(
        CONFIG,
        "@id(\"a\")\nforbid (principal, action, resource);\n",
    );
    let file = pack.path().join("policies/rules.cedar");
    let loaded = Pack::load(pack.path()).unwrap();
    let edit = set_mode(&loaded, &RuleRef::Rule("a".to_owned()), Mode::Enforce).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        edit.write(pack.path()).unwrap();
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
    #[cfg(not(unix))]
    edit.write(pack.path()).unwrap();
    // Written once; the file no longer holds `before`.
    let again = edit.write(pack.path()).unwrap_err();
    assert!(
        again
            .to_string()
            .contains("changed since the edit was computed")
    );
    let leftovers: Vec<_> = fs::read_dir(pack.path().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["rules.cedar"]);
}

/// A pack file the edit creates is a pack file like the others: the mode a new file gets
/// (not the 0600 of a secret), and no temporary file left beside it.
#[cfg(unix)]
#[test]
fn a_created_config_gets_the_mode_of_a_new_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let bare = pack_with("", "");
    let config = bare.path().join("arbiter.toml");
    // What a file created here without asking for a mode gets, under this umask.
    let usual = fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    fs::remove_file(&config).unwrap();
    promote(bare.path(), "default-deny:Agent", Mode::Enforce);
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        usual
    );
    let mut names: Vec<_> = fs::read_dir(bare.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["arbiter.toml", "policies", "schema.cedarschema"]);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn every_audited_forbid_of_the_example_pack_goes_to_enforce_and_back() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines");
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&example, copy.path());
    let shipped = Pack::load(&example).unwrap();
    let audited: Vec<String> = shipped
        .rules()
        .iter()
        .filter(|r| r.mode == Some(Mode::Audit))
        .map(|r| r.id.clone())
        .collect();
    assert!(audited.len() >= 3, "{audited:?}");
    for id in &audited {
        let file = Pack::load(copy.path())
            .unwrap()
            .rule(id)
            .unwrap()
            .file
            .clone();
        let original = fs::read_to_string(copy.path().join(&file)).unwrap();
        let enforced = promote(copy.path(), id, Mode::Enforce);
        assert_ne!(enforced, original);
        let pack = Pack::load(copy.path()).unwrap();
        for other in pack.rules().iter().filter(|r| r.id != *id) {
            let was = shipped.rule(&other.id).unwrap().mode;
            assert_eq!(other.mode, was, "{} changed with {id}", other.id);
        }
        assert_eq!(promote(copy.path(), id, Mode::Audit), original);
    }
}

#[test]
fn an_edit_that_leaves_a_pack_that_does_not_load_is_rejected() {
    let pack = pack_with(
        CONFIG,
        "@id(\"a\")\nforbid (principal, action, resource);\n",
    );
    let loaded = Pack::load(pack.path()).unwrap();
    // The schema breaks after the pack was loaded: the check loads what would be on disk.
    fs::write(pack.path().join("schema.cedarschema"), "entity Agent {\n").unwrap();
    let err = set_mode(&loaded, &RuleRef::Rule("a".to_owned()), Mode::Enforce).unwrap_err();
    assert!(
        matches!(&err, PromoteError::Rejected { file, .. } if file == Path::new("policies/rules.cedar"))
    );
    assert!(
        err.to_string().starts_with(
            "the edit to policies/rules.cedar was not written: the pack would not load:\nerror: "
        ),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(pack.path().join("policies/rules.cedar")).unwrap(),
        "@id(\"a\")\nforbid (principal, action, resource);\n"
    );
}
