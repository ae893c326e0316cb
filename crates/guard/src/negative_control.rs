//! The totality harness's negative control (feature `negative-control`,
//! enabled only by `airlock-exec`'s tests, never by a binary's build).
//!
//! [`skip_rule`] turns off the totality rule of one function on the
//! calling thread, so the harness can show it would find the failing
//! accepted query that rule prevents. No production code calls it.

use std::cell::Cell;

thread_local! {
    static SKIP_RULE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Skips the totality rule of function `name` on this thread (`None`
/// restores every rule).
pub fn skip_rule(name: Option<&'static str>) {
    SKIP_RULE.with(|s| s.set(name));
}

/// Whether the rule of `name` is skipped on this thread.
pub(crate) fn skipped(name: &str) -> bool {
    SKIP_RULE.with(|s| s.get()) == Some(name)
}
