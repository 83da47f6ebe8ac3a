//! What the agentgateway hook has seen of each pinned backend's tools.
//!
//! The hook cannot list a backend's tools itself, as the proxy does before a pinned call:
//! it sees only what the gateway sends it, the `tools/list` results on their way to a
//! client. So it keeps one view per pinned backend, for the whole process, fed with every
//! list it sees: a tool once seen changed stays refused until the pins change (the
//! gateway does not forward `notifications/tools/list_changed` to a hook), and a call of
//! a pinned backend's tool before any list of that backend was seen cannot be compared,
//! so it is refused too (`unseen`). Views exist only for backends with pins, so a gateway
//! that names many backends cannot grow the map beyond the pack's own pins.
//!
//! A list that the gateway merged from several backends names each tool
//! `<backend>_<tool>` (agentgateway's multiplexed names); [`attribute`] reads the backend
//! back from that prefix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arbiter_core::Pack;
use arbiter_core::config::OnToolChange;
use serde_json::Value;

use crate::pins::{self, Check, Pins, Watch, field};

/// One pinned backend's view, and the pins it compares with.
#[derive(Debug)]
struct View {
    /// The pack the view was last checked against: another one (a reload) is compared
    /// by its pins, and the view is kept when they did not change.
    pack: Arc<Pack>,
    pins: Pins,
    on_change: OnToolChange,
    watch: Watch,
}

/// Every pinned backend's view.
#[derive(Debug, Default)]
pub struct Seen {
    views: Mutex<HashMap<String, View>>,
}

impl Seen {
    /// What the pins of `backend` in `pack` say of a call of `tool`: `unseen` when the
    /// backend has pins but no list of it was seen.
    pub fn check(&self, pack: &Arc<Pack>, backend: &str, tool: &str) -> Check {
        let mut views = self.lock();
        match view(&mut views, pack, backend) {
            None => Check::Unpinned,
            Some(view) => view
                .watch
                .check(tool)
                .unwrap_or_else(|| Check::Changed(vec![field::UNSEEN])),
        }
    }

    /// Records one listed tool of `backend` under its own `name` and marks it when it
    /// changed; `true` when it marked it.
    pub fn record(&self, pack: &Arc<Pack>, backend: &str, name: &str, tool: &mut Value) -> bool {
        let mut views = self.lock();
        view(&mut views, pack, backend).is_some_and(|view| view.watch.record_tool(name, tool))
    }

    /// A whole list of `backend` was seen: a tool it did not list is unlisted.
    pub fn completed(&self, pack: &Arc<Pack>, backend: &str) {
        let mut views = self.lock();
        if let Some(view) = view(&mut views, pack, backend) {
            view.watch.completed();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, View>> {
        // A panic while holding the lock left at worst a view half-recorded: still a view.
        self.views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The view of `backend` under `pack`, made or renewed as the pack's pins say; `None` when
/// the backend has no pins.
fn view<'a>(
    views: &'a mut HashMap<String, View>,
    pack: &Arc<Pack>,
    backend: &str,
) -> Option<&'a mut View> {
    let current = views
        .get(backend)
        .is_some_and(|view| Arc::ptr_eq(&view.pack, pack));
    if !current {
        let Some(pins) = pins::pins_of(pack, backend) else {
            views.remove(backend);
            return None;
        };
        let on_change = pins::on_tool_change(pack);
        match views.get_mut(backend) {
            Some(view) if view.pins == pins && view.on_change == on_change => {
                view.pack = Arc::clone(pack);
            }
            _ => {
                tracing::info!(backend, "watching the tools of a pinned backend");
                let view = View {
                    pack: Arc::clone(pack),
                    pins,
                    on_change,
                    watch: Watch::new(pack, backend),
                };
                views.insert(backend.to_owned(), view);
            }
        }
    }
    views.get_mut(backend)
}

/// The backend a listed tool belongs to and its own name there. One backend: its names
/// are its own. Several: the name is `<backend>_<tool>`, and the longest backend name
/// that prefixes it wins (`a_b_c` of backends `a` and `a_b` is `c` of `a_b`). `None` when
/// no backend's prefix fits.
pub fn attribute<'a>(name: &'a str, backends: &'a [String]) -> Option<(&'a str, &'a str)> {
    if let [only] = backends {
        return Some((only.as_str(), name));
    }
    backends
        .iter()
        .filter_map(|backend| {
            let rest = name.strip_prefix(backend.as_str())?.strip_prefix('_')?;
            (!backend.is_empty() && !rest.is_empty()).then_some((backend.as_str(), rest))
        })
        .max_by_key(|(backend, _)| backend.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use super::*;

    #[test]
    fn a_multiplexed_name_names_its_backend_by_the_longest_prefix() {
        let one = vec!["github".to_owned()];
        assert_eq!(
            attribute("github_search", &one),
            Some(("github", "github_search"))
        );
        let two = vec!["a".to_owned(), "a_b".to_owned()];
        assert_eq!(attribute("a_b_c", &two), Some(("a_b", "c")));
        assert_eq!(attribute("a_c", &two), Some(("a", "c")));
        assert_eq!(attribute("a_", &two), None);
        assert_eq!(attribute("b_c", &two), None);
        assert_eq!(attribute("ac", &two), None);
        assert_eq!(attribute("x", &[]), None);
    }
}
