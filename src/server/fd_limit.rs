//! The open-file limit: raised to the hard limit at start-up, and the connection cap kept under
//! it.
//!
//! Many systems start a process with a soft limit of 1,024 descriptors although the hard limit
//! allows far more; with 1,100 idle connections every route, `/healthz` included, failed with
//! "Too many open files". The soft limit is raised to the hard one (as Go's runtime does since
//! 1.19), and connections are capped [`RESERVE`] below it so that upstream calls, files and
//! health probes still find descriptors.

/// Descriptors kept for everything but client connections: upstream connections (the HTTP
/// client's pool), local files, the runtime's own.
pub const RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard limit; returns the soft limit in force after.
#[cfg(unix)]
pub fn raise() -> std::io::Result<u64> {
    let limit = get()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed, which lives on this stack frame.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    current().ok_or_else(std::io::Error::last_os_error)
}

/// The soft open-file limit in force, if it can be read.
#[cfg(unix)]
pub fn current() -> Option<u64> {
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix
    get().ok().map(|limit| limit.rlim_cur as u64)
}

#[cfg(unix)]
fn get() -> std::io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit)
}

#[cfg(not(unix))]
pub fn raise() -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(not(unix))]
pub fn current() -> Option<u64> {
    None
}

/// The connection cap: the configured one, or less when the open-file limit would not hold it
/// with [`RESERVE`] left (at least half the limit's worth of connections on very small limits).
pub fn connection_cap(configured: usize, soft_limit: Option<u64>) -> usize {
    match soft_limit {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVE).max(limit / 2).max(1);
            configured.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_reserve_under_the_limit() {
        assert_eq!(connection_cap(4096, Some(1024)), 1024 - RESERVE as usize);
        assert_eq!(connection_cap(4096, Some(1_048_576)), 4096);
        assert_eq!(connection_cap(4096, Some(300)), 150);
        assert_eq!(connection_cap(4096, None), 4096);
    }

    #[test]
    fn raising_keeps_the_limit_readable() {
        let after = raise().unwrap();
        assert_eq!(current(), Some(after));
    }
}
