//! Captures every log line of a test binary (debug level, the Azure SDK's included) so that
//! tests can search them for secrets.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use super::azurite::KEY;
use super::fake_entra::FakeEntra;

/// The captured output; installs the capturing subscriber on first use.
pub fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || SharedWriter(writer.clone()))
            .try_init();
        buffer
    })
}

pub fn text() -> String {
    String::from_utf8_lossy(&captured().lock().unwrap()).into_owned()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts that no captured line holds a SAS signature value, the account key, the client
/// secret or any token `entra` issued (when given).
pub fn assert_no_secrets(entra: Option<&FakeEntra>) {
    let logs = text();
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
