//! The open-file limit, which bounds how many checks can have a connection open.
//!
//! Every check without keep-alive opens a socket of its own, so `concurrency`
//! checks need about as many file descriptors, plus the few the process keeps
//! (Kafka connections, the metrics listener, the log). The usual soft
//! `RLIMIT_NOFILE` is 1024, the default `concurrency` too: past the limit a
//! connect fails with EMFILE and would be reported as a `connect` error of the
//! site. So at start the soft limit is raised to the hard limit, and if
//! `concurrency` plus [`FD_HEADROOM`] still does not fit, a warning says what
//! to do.

/// Descriptors kept for what is not a check (Kafka, `/metrics`, files, DNS).
pub const FD_HEADROOM: u64 = 64;

/// Raises the soft open-file limit to the hard one (best effort) and returns
/// the soft limit in force afterwards; `None` when it is unlimited or unknown.
#[cfg(unix)]
pub fn raise_open_files() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let current = before.current?;
    // An unlimited hard limit cannot be the soft one everywhere (macOS wants
    // at most OPEN_MAX): aim at a large, finite number then.
    let target = before.maximum.unwrap_or(1 << 20);
    if target <= current {
        return Some(current);
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: before.maximum,
        },
    ) {
        Ok(()) => {
            tracing::debug!(from = current, to = target, "raised the open-file limit");
            Some(target)
        }
        Err(e) => {
            tracing::debug!(error = %e, limit = current, "cannot raise the open-file limit");
            getrlimit(Resource::Nofile).current
        }
    }
}

/// No open-file limit to raise on this platform.
#[cfg(not(unix))]
pub fn raise_open_files() -> Option<u64> {
    None
}

/// The warning to log when `concurrency` checks may run out of descriptors
/// under the open-file limit `limit`.
pub fn open_files_warning(concurrency: usize, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    let needed = (concurrency as u64).saturating_add(FD_HEADROOM);
    (needed > limit).then(|| {
        format!(
            "concurrency = {concurrency} needs about {needed} open files ({FD_HEADROOM} beside the checks) \
             but the limit is {limit}, even after raising the soft limit to the hard one: checks past it \
             fail to connect (EMFILE, reported as `connect` errors). Raise the limit (`ulimit -n {needed}` \
             in the shell, `LimitNOFILE={needed}` in a systemd unit, `--ulimit nofile={needed}` for a \
             container) or lower concurrency to {}",
            limit.saturating_sub(FD_HEADROOM).max(1)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_concurrency_and_headroom_exceed_the_limit() {
        assert_eq!(open_files_warning(1024, None), None);
        assert_eq!(open_files_warning(1024, Some(1 << 20)), None);
        assert_eq!(open_files_warning(960, Some(1024)), None);
        let w = open_files_warning(1024, Some(1024)).unwrap();
        assert!(
            w.contains("concurrency = 1024")
                && w.contains("the limit is 1024")
                && w.contains("ulimit -n 1088")
                && w.contains("LimitNOFILE=1088")
                && w.contains("lower concurrency to 960"),
            "{w}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use rustix::process::{getrlimit, Resource};
        let after = raise_open_files();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(after, now.current);
        if let (Some(current), Some(maximum)) = (now.current, now.maximum) {
            assert_eq!(current, maximum, "{now:?}");
        }
    }
}
