//! `arbiter mcp-proxy pin`: starts an MCP server as a client would, reads its whole tool
//! list and records each tool in the pack's `arbiter.toml` under
//! `[mcp.pins.<upstream>.<tool>]`, replacing that upstream's pins and nothing else (the
//! rest of the file keeps its formatting and comments). Prints what changed.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arbiter_core::Pack;
use arbiter_core::fs::{FileMode, IfExists, write_atomic};
use arbiter_mcp::jsonrpc::DEFAULT_MAX_MESSAGE_BYTES;
use arbiter_mcp::pins::{self, Pins, ToolPin};
use toml_edit::{DocumentMut, Item, Table, value};

use crate::Failure;
use crate::output::printable;

/// Arguments of `arbiter mcp-proxy pin`.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// The pack directory: its arbiter.toml gets the pins.
    #[arg(long)]
    pub pack: PathBuf,
    /// The MCP server's name, as `arbiter mcp-proxy --upstream-name` gives it (default: the
    /// command's file name, as there).
    #[arg(long)]
    pub upstream_name: Option<String>,
    /// The largest message read from the server, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub max_message_bytes: u64,
    /// The MCP server to start, after `--`: `arbiter mcp-proxy pin --pack p -- npx server`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The upstream's name: given, or the command's file name.
pub fn upstream_name(given: Option<&str>, command: &[OsString]) -> String {
    given.map_or_else(
        || {
            command
                .first()
                .map(Path::new)
                .and_then(Path::file_name)
                .map_or_else(|| "mcp".to_owned(), |n| n.to_string_lossy().into_owned())
        },
        str::to_owned,
    )
}

/// Runs `arbiter mcp-proxy pin`.
pub fn pin(args: PinArgs) -> Result<ExitCode, Failure> {
    let upstream = upstream_name(args.upstream_name.as_deref(), &args.command);
    if upstream.is_empty() {
        return Err(Failure::Input(
            "--upstream-name must not be empty".to_owned(),
        ));
    }
    // The pack must load before, and after: pinning never breaks a pack.
    let before = Pack::load(&args.pack)?;
    let old = pins::pins_of(&before, &upstream);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    let max = usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX);
    let pinned = runtime.block_on(arbiter_mcp::client::pin_stdio(&args.command, max));
    runtime.shutdown_background();
    // The server's own words (an error message) are shown escaped.
    let new = pinned
        .map_err(|e| Failure::Input(format!("cannot pin the server's tools: {}", printable(&e))))?;

    let path = args.pack.join("arbiter.toml");
    let (text, mode) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let permissions = std::fs::metadata(&path)
                .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?
                .permissions();
            (text, FileMode::Same(permissions))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), FileMode::Default),
        Err(e) => return Err(Failure::Input(format!("{}: {e}", path.display()))),
    };
    let edited = with_pins(&text, &upstream, &new)
        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
    let write = |bytes: &str| {
        write_atomic(&path, bytes.as_bytes(), mode.clone(), IfExists::Replace)
            .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))
    };
    write(&edited)?;
    if let Err(problems) = Pack::load(&args.pack) {
        write(&text)?;
        return Err(Failure::Input(format!(
            "the pins were not kept: with them, the pack does not load:\n{problems}"
        )));
    }
    out!("{}", report(&upstream, &path, old.as_ref(), &new))?;
    Ok(ExitCode::SUCCESS)
}

/// `src` with `[mcp.pins.<upstream>]` replaced by `pins`, one table a tool.
pub fn with_pins(src: &str, upstream: &str, pins: &Pins) -> Result<String, String> {
    let mut doc: DocumentMut = src.parse().map_err(|e| format!("not TOML: {e}"))?;
    let mcp = implicit_table(doc.as_table_mut(), "mcp", "[mcp]")?;
    let all = implicit_table(mcp, "pins", "[mcp.pins]")?;
    let mut tools = Table::new();
    tools.set_implicit(true);
    for (name, pin) in pins {
        let mut table = Table::new();
        if let Some(description) = &pin.description {
            table.insert("description", value(description.as_str()));
        }
        if let Some(title) = &pin.title {
            table.insert("title", value(title.as_str()));
        }
        table.insert("input_schema", value(pin.input_schema.as_str()));
        if let Some(hash) = &pin.output_schema {
            table.insert("output_schema", value(hash.as_str()));
        }
        if let Some(hash) = &pin.annotations {
            table.insert("annotations", value(hash.as_str()));
        }
        tools.insert(name, Item::Table(table));
    }
    all.insert(upstream, Item::Table(tools));
    let out = doc.to_string();
    // `toml_edit` keeps the file's own line endings but writes new lines with `\n`.
    let crlf = src.contains("\r\n") && src.matches('\n').count() == src.matches("\r\n").count();
    Ok(if crlf {
        out.replace("\r\n", "\n").replace('\n', "\r\n")
    } else {
        out
    })
}

/// The table at `key`, made (without a header of its own) when absent.
fn implicit_table<'t>(
    parent: &'t mut Table,
    key: &str,
    place: &str,
) -> Result<&'t mut Table, String> {
    if !parent.contains_key(key) {
        let mut table = Table::new();
        table.set_implicit(true);
        parent.insert(key, Item::Table(table));
    }
    parent
        .get_mut(key)
        .and_then(Item::as_table_mut)
        .ok_or_else(|| format!("{place} is not a table written with `[…]` headers"))
}

/// What pinning changed, for the terminal.
fn report(upstream: &str, path: &Path, old: Option<&Pins>, new: &Pins) -> String {
    let mut out = String::new();
    let empty = Pins::new();
    let old_pins = old.unwrap_or(&empty);
    let names: BTreeSet<&String> = old_pins.keys().chain(new.keys()).collect();
    let (mut added, mut removed, mut changed, mut same) = (0, 0, 0, 0);
    let mut lines = String::new();
    for name in names {
        let shown = printable(name);
        match (old_pins.get(name), new.get(name)) {
            (None, Some(_)) => {
                added += 1;
                let _ = writeln!(lines, "  + {shown}");
            }
            (Some(_), None) => {
                removed += 1;
                let _ = writeln!(lines, "  - {shown}");
            }
            (Some(was), Some(is)) => {
                let fields = ToolPin::differences(was, is);
                if fields.is_empty() {
                    same += 1;
                } else {
                    changed += 1;
                    let _ = writeln!(lines, "  ~ {shown}: {}", fields.join(", "));
                }
            }
            (None, None) => {}
        }
    }
    let _ = writeln!(
        out,
        "pinned {} of upstream `{}` in {}: {added} added, {removed} removed, {changed} changed, \
         {same} unchanged{}",
        if new.len() == 1 {
            "1 tool".to_owned()
        } else {
            format!("{} tools", new.len())
        },
        printable(upstream),
        path.display(),
        if old.is_none() {
            " (the upstream had no pins)"
        } else {
            ""
        }
    );
    out.push_str(&lines);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "a test")]

    use super::*;

    fn pin(description: &str) -> ToolPin {
        ToolPin {
            description: Some(description.to_owned()),
            title: None,
            input_schema: format!("sha256:{}", "0".repeat(64)),
            output_schema: None,
            annotations: Some(format!("sha256:{}", "1".repeat(64))),
        }
    }

    #[test]
    fn pins_replace_the_upstreams_own_and_keep_the_rest_of_the_file() {
        let src = "# the pack's settings\n[defaults]\nmode = \"audit\"  # for now\n\n\
                   [mcp.pins.other.x]\ninput_schema = \"sha256:\"\n\n\
                   [mcp.pins.srv.gone]\ninput_schema = \"sha256:\"\n\n[log]\nmask = []\n";
        let pins: Pins = [
            ("echo".to_owned(), pin("Echoes\nback")),
            ("get-env".to_owned(), pin("Env")),
        ]
        .into_iter()
        .collect();
        let out = with_pins(src, "srv", &pins).unwrap();
        assert!(
            out.starts_with("# the pack's settings\n[defaults]\nmode = \"audit\"  # for now\n"),
            "{out}"
        );
        assert!(out.contains("[mcp.pins.other.x]"), "{out}");
        assert!(!out.contains("gone"), "{out}");
        // Where the upstream's pins were; a text with line breaks as a multi-line string.
        assert!(out.contains("[mcp.pins.other.x]\ninput_schema = \"sha256:\"\n\n[mcp.pins.srv.echo]\ndescription = \"\"\"\nEchoes\nback\"\"\"\ninput_schema = \"sha256:000"), "{out}");
        assert!(out.contains("[mcp.pins.srv.get-env]\n"), "{out}");
        assert!(out.contains("[log]\nmask = []"), "{out}");
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(
            parsed["mcp"]["pins"]["srv"]["echo"]["description"].as_str(),
            Some("Echoes\nback")
        );
        // Again, the same: nothing moves.
        assert_eq!(with_pins(&out, "srv", &pins).unwrap(), out);
        // A file without [mcp] gets no empty header.
        let fresh = with_pins("", "srv", &pins).unwrap();
        assert!(fresh.starts_with("[mcp.pins.srv.echo]\n"), "{fresh}");
        assert!(with_pins("mcp = 1\n", "srv", &pins).is_err());
    }

    #[test]
    fn the_report_says_what_changed() {
        let old: Pins = [("a".to_owned(), pin("A")), ("b".to_owned(), pin("B"))]
            .into_iter()
            .collect();
        let new: Pins = [("a".to_owned(), pin("A2")), ("c".to_owned(), pin("C"))]
            .into_iter()
            .collect();
        let said = report("srv", Path::new("p/arbiter.toml"), Some(&old), &new);
        assert_eq!(
            said,
            "pinned 2 tools of upstream `srv` in p/arbiter.toml: 1 added, 1 removed, 1 changed, 0 unchanged\n  ~ a: description\n  - b\n  + c\n"
        );
    }
}
