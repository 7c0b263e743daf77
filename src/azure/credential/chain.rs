//! `credential.kind = "default"`: a credential chain in the order of the Azure SDKs'
//! `DefaultAzureCredential` (environment, workload identity, managed identity, Azure CLI;
//! https://learn.microsoft.com/python/api/azure-identity/azure.identity.defaultazurecredential),
//! which `azure_identity` 1.0 does not ship.
//!
//! On the first token request each candidate is built from the environment and asked for a
//! token, in order; the first that gets one is kept for good (logged once, by kind) and every
//! later request goes to it alone. When none does, the one error lists every candidate's
//! failure, and the next request tries them all again. A candidate that cannot be there (its
//! variables unset) fails without a network call; the IMDS managed identity and the Azure CLI
//! get a bounded first try, so that a machine without them does not wait for their retries.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use tokio::sync::{Mutex, OnceCell};

/// A credential the chain may use, once built: what it is called in logs and errors, and how
/// long its first try may take (`None`: its own timeouts and retries).
pub struct Attempt {
    pub label: String,
    pub credential: Arc<dyn TokenCredential>,
    pub first_try: Option<Duration>,
}

type Build = Box<dyn Fn() -> Result<Attempt, String> + Send + Sync>;

/// One link of the chain: its name (in an error when it cannot even be built) and its builder,
/// which reads the environment when the chain is tried.
pub struct Candidate {
    name: &'static str,
    build: Build,
}

impl Candidate {
    pub fn new(
        name: &'static str,
        build: impl Fn() -> Result<Attempt, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            build: Box::new(build),
        }
    }
}

/// At most this much of one candidate's failure goes into the chain's error.
const MAX_REASON_CHARS: usize = 600;

/// The chain: tries its candidates until one gets a token, then keeps that one.
pub struct Chain {
    candidates: Vec<Candidate>,
    chosen: OnceCell<Arc<dyn TokenCredential>>,
    /// One selection at a time: concurrent first requests wait for it instead of racing.
    selecting: Mutex<()>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field(
                "candidates",
                &self.candidates.iter().map(|c| c.name).collect::<Vec<_>>(),
            )
            .field("chosen", &self.chosen.initialized())
            .finish()
    }
}

impl Chain {
    pub fn new(candidates: Vec<Candidate>) -> Self {
        Self {
            candidates,
            chosen: OnceCell::new(),
            selecting: Mutex::new(()),
        }
    }

    /// Tries every candidate in order; the first token wins and its credential is kept.
    async fn select(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let mut failures = Vec::with_capacity(self.candidates.len());
        for candidate in &self.candidates {
            let attempt = match (candidate.build)() {
                Ok(attempt) => attempt,
                Err(reason) => {
                    failures.push(format!("{}: {}", candidate.name, one_line(&reason)));
                    continue;
                }
            };
            let token = attempt.credential.get_token(scopes, options.clone());
            let result = match attempt.first_try {
                None => token.await.map_err(|e| e.to_string()),
                Some(limit) => match tokio::time::timeout(limit, token).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "no token within {} ms (not available here)",
                        limit.as_millis()
                    )),
                },
            };
            match result {
                Ok(token) => {
                    tracing::info!(
                        credential = %attempt.label,
                        "Entra ID credential chosen by the default chain"
                    );
                    // Only this task selects (the lock), so the cell is still empty.
                    let _ = self.chosen.set(attempt.credential);
                    return Ok(token);
                }
                Err(reason) => failures.push(format!("{}: {}", attempt.label, one_line(&reason))),
            }
        }
        let message = format!(
            "no credential of the default chain got a token ({})",
            failures.join("; ")
        );
        tracing::warn!(error = %message, "Entra ID default credential chain failed");
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            message,
        ))
    }
}

#[async_trait::async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(credential) = self.chosen.get() {
            return credential.get_token(scopes, options).await;
        }
        let _selecting = self.selecting.lock().await;
        match self.chosen.get() {
            // Chosen while this request waited.
            Some(credential) => credential.get_token(scopes, options).await,
            None => self.select(scopes, options).await,
        }
    }
}

/// A failure as one bounded line (the SDK's messages span lines and end with a link).
fn one_line(reason: &str) -> String {
    let line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use azure_core::time::OffsetDateTime;

    /// Answers with a token, an error, or nothing at all (hangs), counting its calls.
    #[derive(Debug)]
    struct Fake {
        answer: Result<&'static str, &'static str>,
        hang: bool,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Fake {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            match self.answer {
                Ok(token) => Ok(AccessToken::new(
                    token.to_owned(),
                    OffsetDateTime::now_utc() + Duration::from_secs(3600),
                )),
                Err(e) => Err(azure_core::Error::with_message(
                    ErrorKind::Credential,
                    format!("{e}\nTo troubleshoot, visit https://aka.ms/x"),
                )),
            }
        }
    }

    fn fake(answer: Result<&'static str, &'static str>, hang: bool) -> Arc<Fake> {
        Arc::new(Fake {
            answer,
            hang,
            calls: AtomicUsize::new(0),
        })
    }

    fn candidate(name: &'static str, credential: &Arc<Fake>, first_try: Option<u64>) -> Candidate {
        let credential = credential.clone();
        Candidate::new(name, move || {
            Ok(Attempt {
                label: format!("{name} (built)"),
                credential: credential.clone(),
                first_try: first_try.map(Duration::from_millis),
            })
        })
    }

    #[tokio::test]
    async fn the_first_that_gets_a_token_is_kept() {
        let failing = fake(Err("refused"), false);
        let working = fake(Ok("t1"), false);
        let never = fake(Ok("t2"), false);
        let chain = Chain::new(vec![
            Candidate::new("absent", || Err("X_VARIABLE is not set".into())),
            candidate("failing", &failing, None),
            candidate("working", &working, None),
            candidate("never", &never, None),
        ]);
        for _ in 0..3 {
            let token = chain.get_token(&["s/.default"], None).await.unwrap();
            assert_eq!(token.token.secret(), "t1");
        }
        assert_eq!(failing.calls.load(Ordering::SeqCst), 1, "tried once");
        assert_eq!(working.calls.load(Ordering::SeqCst), 3, "then used alone");
        assert_eq!(never.calls.load(Ordering::SeqCst), 0, "never reached");
    }

    #[tokio::test]
    async fn none_working_gives_one_error_listing_every_failure_and_retries_later() {
        let failing = fake(Err("AADSTS7000215: Invalid client secret provided."), false);
        let hanging = fake(Ok("late"), true);
        let chain = Chain::new(vec![
            Candidate::new("environment", || Err("AZURE_TENANT_ID is not set".into())),
            candidate("failing", &failing, None),
            candidate("hanging", &hanging, Some(50)),
        ]);
        let err = chain.get_token(&["s/.default"], None).await.unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::Credential);
        let text = err.to_string();
        assert_eq!(
            text,
            "no credential of the default chain got a token (environment: AZURE_TENANT_ID is \
             not set; failing (built): AADSTS7000215: Invalid client secret provided. To \
             troubleshoot, visit https://aka.ms/x; hanging (built): no token within 50 ms (not \
             available here))"
        );
        chain.get_token(&["s/.default"], None).await.unwrap_err();
        assert_eq!(failing.calls.load(Ordering::SeqCst), 2, "tried again");
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        assert_eq!(one_line(" a\n b\t c "), "a b c");
        let long = "é".repeat(MAX_REASON_CHARS + 10);
        assert_eq!(one_line(&long).chars().count(), MAX_REASON_CHARS + 1);
    }
}
