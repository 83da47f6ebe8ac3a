//! `arbiter chains`: where each chain of the pack is weakest, per identity.

use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_core::clock::Clock;
use arbiter_core::period::Period;
use arbiter_lifecycle::chains::{self, Chains, Level, Query};
use arbiter_store::Store;
use clap::Args;
use jiff::SignedDuration;

use crate::{Failure, load};

/// `arbiter chains`.
#[derive(Debug, Args)]
pub struct ChainsArgs {
    /// The pack directory.
    #[arg(long)]
    pack: PathBuf,
    /// The data directory: adds the identities the log saw, each step's traffic in the
    /// window, and the readiness of the rules that would close a gap.
    #[arg(long, env = "ARBITER_DATA")]
    data: Option<PathBuf>,
    /// Only this principal (`Agent::"bot"`).
    #[arg(long)]
    principal: Option<String>,
    /// Only this chain.
    #[arg(long)]
    chain: Option<String>,
    /// How far back the traffic is counted, with --data.
    #[arg(long, default_value = "30d")]
    window: String,
    /// Exit 1 when any identity's chain is below this level: uncontrolled, audited,
    /// warned, partially-enforced or enforced.
    #[arg(long, value_name = "LEVEL")]
    fail_below: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `arbiter chains`.
pub fn chains(args: ChainsArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    let fail_below = match args.fail_below.as_deref() {
        None => None,
        Some(word) => Some(Level::parse(word).ok_or_else(|| {
            Failure::Input(format!(
                "--fail-below `{word}`: expected uncontrolled, audited, warned, \
                 partially-enforced or enforced"
            ))
        })?),
    };
    let window = Period::parse(&args.window)
        .map_err(|e| Failure::Input(format!("--window `{}`: {e}", args.window)))?;
    let pack = load(&args.pack)?;
    let store = match &args.data {
        Some(data) => {
            if !data.join(arbiter_store::DB_FILE).is_file() {
                return Err(Failure::Input(format!(
                    "no arbiter store in {} (is --data the server's data directory?)",
                    data.display()
                )));
            }
            Some(Store::open_read_only(data).map_err(|e| Failure::Input(e.to_string()))?)
        }
        None => None,
    };
    let now = clock.now();
    let back = SignedDuration::try_from(window.duration()).unwrap_or(SignedDuration::MAX);
    let query = Query {
        chain: args.chain,
        principal: args.principal,
        since: store
            .as_ref()
            .map(|_| now.checked_sub(back).unwrap_or(jiff::Timestamp::MIN)),
    };
    let found = chains::analyse(&pack, store.as_ref(), &query, now)
        .map_err(|e| Failure::Input(e.to_string()))?;
    let printed = if args.json {
        serde_json::to_string(&found)
            .map_err(|e| Failure::Input(e.to_string()))
            .and_then(|json| outln!("{json}"))
    } else {
        print(&found)
    };
    crate::output::unless_closed(printed)?;
    let below = fail_below.is_some_and(|floor| {
        found
            .chains
            .iter()
            .flat_map(|c| &c.identities)
            .any(|i| i.level < floor)
    });
    Ok(if below {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print(found: &Chains) -> Result<(), Failure> {
    if found.chains.is_empty() {
        outln!("the pack has no [chains]")?;
        return Ok(());
    }
    for chain in &found.chains {
        outln!("chain {}: {}", chain.name, chain.steps.join(" -> "))?;
        if chain.identities.is_empty() {
            outln!("  no identity can make a request on any of its steps\n")?;
            continue;
        }
        let mut header: Vec<&str> = vec!["identity"];
        header.extend(chain.steps.iter().map(String::as_str));
        header.push("chain");
        let mut table = crate::lifecycle::table(&header);
        for identity in &chain.identities {
            let mut row = vec![identity.principal.clone()];
            for step in &identity.steps {
                let mut cell = step.level.map_or("n/a", Level::as_str).to_owned();
                if identity.weakest.contains(&step.step) {
                    cell.push('*');
                }
                if let Some(t) = step.traffic {
                    cell.push_str(&format!(" ({}/{})", t.enforced_in_scope, t.requests));
                }
                row.push(cell);
            }
            row.push(identity.level.as_str().to_owned());
            table.add_row(row);
        }
        outln!("{table}")?;
        if found.since.is_some() {
            outln!(
                "  (n/m): of m requests on the step in the window, n had an enforced forbid in scope"
            )?;
        }
        outln!("  *: the weakest step")?;
        for identity in &chain.identities {
            for step in &identity.steps {
                if step.level.is_some_and(|l| l < Level::Enforced) && !step.left.is_empty() {
                    outln!("  {} `{}` leaves:", identity.principal, step.step)?;
                    for left in &step.left {
                        outln!("    - {left}")?;
                    }
                }
            }
            for bypass in &identity.bypasses {
                outln!("  ! {}", bypass.message)?;
                outln!("    fix: {}", bypass.fix)?;
            }
            for p in &identity.promotions {
                let verdict = p
                    .verdict
                    .as_deref()
                    .map(|v| format!(", readiness: {v}"))
                    .unwrap_or_default();
                outln!(
                    "  ^ {}: promoting `{}` ({}{verdict}) raises the chain to {}",
                    identity.principal,
                    p.rule,
                    p.mode.as_str(),
                    p.raises_to.as_str()
                )?;
            }
        }
        outln!("")?;
    }
    Ok(())
}
