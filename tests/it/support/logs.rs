//! Captures the log lines of one test (debug level, the Azure SDK's included) so that it can
//! search them for secrets or count what it caused.
//!
//! Every test shares this process, and so the one global subscriber: lines are told apart by
//! the tokio runtime that emits them. `#[tokio::test]` gives each test its own runtime, and
//! everything the test drives runs on it — the server, the fakes, the SDK's requests, on the
//! runtime's worker and blocking threads alike — so a [`Capture`] holds that test's lines and
//! no other test's. Events of runtimes without a capture (and outside any runtime) are not
//! formatted at all.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once, Weak};

use tokio::runtime::{Handle, Id};
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, dynamic_filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::azurite::KEY;
use super::fake_entra::FakeEntra;

type Buffer = Arc<Mutex<Vec<u8>>>;
/// The buffers of the runtimes being captured, by runtime (weak: a capture ends when its test
/// drops it).
type Buffers = HashMap<Id, Weak<Mutex<Vec<u8>>>>;

fn buffers() -> MutexGuard<'static, Buffers> {
    static BUFFERS: LazyLock<Mutex<Buffers>> = LazyLock::new(Default::default);
    BUFFERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The buffer of the runtime this thread runs on, if that runtime is being captured.
fn current_buffer() -> Option<Buffer> {
    let id = Handle::try_current().ok()?.id();
    buffers().get(&id).and_then(Weak::upgrade)
}

/// The log lines of the calling test's runtime from now on, until dropped.
pub struct Capture(Buffer);

/// Starts capturing the calling test's lines (a second call in the same test shares the first
/// one's buffer); installs the process' subscriber on first use.
///
/// Panics outside a tokio runtime: only a runtime tells one test's lines from another's.
pub fn capture() -> Capture {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Route)
            // Dynamic: whether a callsite is enabled depends on the runtime that hits it, so
            // no callsite's answer may be cached (a plain `filter_fn` caches its first one).
            .with_filter(
                dynamic_filter_fn(|metadata, _| {
                    *metadata.level() <= Level::DEBUG && current_buffer().is_some()
                })
                .with_max_level_hint(LevelFilter::DEBUG),
            );
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .expect("no other global subscriber in the test process");
    });
    // A callsite that another test hit for the first time while the subscriber was being
    // installed can keep the interest it computed without it ("never"); recompute them all.
    tracing::callsite::rebuild_interest_cache();
    let id = Handle::try_current()
        .expect("logs::capture() runs inside the test's tokio runtime")
        .id();
    let mut buffers = buffers();
    buffers.retain(|_, buffer| buffer.strong_count() > 0);
    if let Some(buffer) = buffers.get(&id).and_then(Weak::upgrade) {
        return Capture(buffer);
    }
    let buffer = Buffer::default();
    buffers.insert(id, Arc::downgrade(&buffer));
    Capture(buffer)
}

impl Capture {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Asserts that no captured line holds a SAS signature value, the account key, the client
    /// secret or any token `entra` issued (when given).
    pub fn assert_no_secrets(&self, entra: Option<&FakeEntra>) {
        let logs = self.text();
        assert!(
            logs.contains("asset loaded") && logs.contains("finished processing request"),
            "debug logs of full requests were captured (else this check proves nothing)"
        );
        // The SDK's logging policy prints `sig=REDACTED`; any other value is a leak.
        let leaks: Vec<&str> = logs
            .lines()
            .filter(|l| l.split("sig=").skip(1).any(|v| !v.starts_with("REDACTED")))
            .take(3)
            .collect();
        assert!(leaks.is_empty(), "a SAS signature in the logs: {leaks:#?}");
        assert!(!logs.contains(KEY), "the account key in the logs");
        if let Some(entra) = entra {
            assert!(
                !logs.contains(&entra.client_secret()),
                "the client secret in the logs"
            );
            for token in entra.access_tokens() {
                assert!(!logs.contains(&token), "a bearer token in the logs");
                assert!(
                    !logs.contains(token.rsplit('.').next().unwrap()),
                    "a token signature in the logs"
                );
            }
        }
    }
}

/// Writes each event to the buffer of the runtime that emits it (or nowhere).
struct Route;

impl<'a> MakeWriter<'a> for Route {
    type Writer = RouteWriter;

    fn make_writer(&'a self) -> RouteWriter {
        RouteWriter(current_buffer())
    }
}

struct RouteWriter(Option<Buffer>);

impl Write for RouteWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(buffer) = &self.0 {
            buffer.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
