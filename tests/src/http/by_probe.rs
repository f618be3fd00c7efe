//! What `/by-probe` answers each probe: always 200, always 503, or a cycle
//! of outcomes ([`super::TestServer::fail_pattern_for`]), one request each.

use std::collections::HashMap;
use std::sync::Mutex;

/// Per `x-probe` value: the outcomes to cycle through (`true`: 503) and the
/// next one's index. A probe not named answers 200.
#[derive(Debug, Default)]
pub(super) struct ByProbe(Mutex<HashMap<String, (Vec<bool>, usize)>>);

impl ByProbe {
    /// Answers `probe`'s requests with `pattern` in a cycle (empty: 200).
    pub(super) fn set(&self, probe: &str, pattern: &[bool]) {
        let mut all = self.0.lock().expect("by-probe lock");
        if pattern.iter().any(|fail| *fail) {
            all.insert(probe.to_owned(), (pattern.to_vec(), 0));
        } else {
            all.remove(probe);
        }
    }

    /// Whether this request of `probe` fails (and moves its cycle on).
    pub(super) fn next_fails(&self, probe: Option<&str>) -> bool {
        let mut all = self.0.lock().expect("by-probe lock");
        let Some((pattern, next)) = probe.and_then(|p| all.get_mut(p)) else {
            return false;
        };
        let fail = pattern[*next % pattern.len()];
        *next += 1;
        fail
    }
}
