//! A fake Microsoft Entra ID (Azure AD) token service, in process, for tests that cannot reach
//! `login.microsoftonline.com` or a managed identity endpoint.
//!
//! It speaks the token forms the service's credentials use (see
//! `shared/reference/azure-storage-notes.md`):
//! - client credentials: `POST /{tenant}/oauth2/v2.0/token` (form `client_id`, `client_secret`,
//!   `grant_type=client_credentials`, `scope=<resource>/.default`), reached by pointing the
//!   credential's authority host at [`FakeEntra::authority_host`];
//! - the same with `client_assertion` (`client_assertion_type=urn:ietf:params:oauth:client-
//!   assertion-type:jwt-bearer`) instead of the secret: for the app, an RS256 JWT signed by the
//!   certificate registered with [`FakeEntra::with_certificate`] (its `x5t`, signature, `aud` =
//!   the token endpoint, `iss` = `sub` = the client id and times are checked, as the Microsoft
//!   identity platform's "certificate credentials" page describes); for the workload identity
//!   ([`FakeEntra::workload_identity_client_id`]), exactly the federated token of
//!   [`FakeEntra::with_federated_token`];
//! - App Service managed identity: `GET /msi/token?api-version=2019-08-01&resource=...` with the
//!   `x-identity-header` secret, reached with `IDENTITY_ENDPOINT=`[`FakeEntra::msi_endpoint`] and
//!   `IDENTITY_HEADER=`[`FakeEntra::identity_header`];
//! - IMDS managed identity: `GET /metadata/identity/oauth2/token?api-version=...&resource=...`
//!   with `Metadata: true`, over plain HTTP ([`FakeEntra::serve_imds_proxy`]): `azure_identity`
//!   always asks `http://169.254.169.254`, so the fake stands in as the HTTP proxy
//!   (`HTTP_PROXY`) and records which host each request was for.
//!
//! Tokens are real JWTs (HS256 over [`TEST_SIGNING_KEY`]) with the claims Azurite's
//! `--oauth basic` checks (`iss`, `aud`, `nbf`/`iat`/`exp`) and the ones a user delegation key
//! takes (`oid`, `tid`), so the same token works against Azurite and against the fake ARM, which
//! verifies the signature to make sure a token really came from here.
//!
//! Everything a test may want to assert on is recorded: requests per form, every token issued
//! (to check none of them ever shows up in logs), and faults can be queued for the next requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

use super::faults::FaultQueue;
use super::tls::{self, TestPki};

/// HMAC key the fake signs its tokens with. Azurite does not check signatures; the fake ARM does,
/// with this key, so a hand-made or mangled token is told apart from one the fake issued.
pub const TEST_SIGNING_KEY: &[u8] = b"ams-thumbnails fake Entra ID signing key - tests only";

/// Defaults: obviously fake GUIDs (`7e57` = "test"), distinct per role so a mix-up shows.
pub const DEFAULT_TENANT_ID: &str = "7e57a000-0000-4000-8000-000000000001";
pub const DEFAULT_CLIENT_ID: &str = "7e57a000-0000-4000-8000-000000000002";
pub const DEFAULT_CLIENT_SECRET: &str = "fake-client-secret-7e57~do-not-log";
pub const DEFAULT_OBJECT_ID: &str = "7e57a000-0000-4000-8000-000000000003";
pub const DEFAULT_MI_CLIENT_ID: &str = "7e57a000-0000-4000-8000-000000000004";
pub const DEFAULT_MI_OBJECT_ID: &str = "7e57a000-0000-4000-8000-000000000005";
pub const DEFAULT_IDENTITY_HEADER: &str = "fake-identity-header-7e57";
pub const DEFAULT_WI_CLIENT_ID: &str = "7e57a000-0000-4000-8000-000000000006";
pub const DEFAULT_WI_OBJECT_ID: &str = "7e57a000-0000-4000-8000-000000000007";
/// `client_assertion_type` of both assertion forms.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The api-versions IMDS' identity endpoint takes that the fake accepts.
pub const IMDS_API_VERSIONS: &[&str] = &["2018-02-01", "2019-08-01"];
/// The managed identity API version App Service speaks (and `azure_identity` 1.0 sends).
pub const MSI_API_VERSION: &str = "2019-08-01";

/// Which token request form a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenForm {
    /// Client credentials with a secret.
    ClientCredentials,
    /// Client credentials with a certificate-signed assertion.
    ClientCertificate,
    /// Client credentials with the workload identity's federated token as the assertion.
    WorkloadIdentity,
    /// App Service managed identity.
    ManagedIdentity,
    /// IMDS managed identity.
    Imds,
}

/// One request the IMDS endpoint answered: the host it was addressed to and its api-version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsRequest {
    pub host: String,
    pub api_version: String,
}

/// A fault for the next token request (either form), consumed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntraFault {
    /// Answer with this status and an AAD-style error body.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
}

/// A token the fake handed out.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub form: TokenForm,
    /// `aud` claim (scope/resource without `/.default` and trailing `/`).
    pub audience: String,
    pub access_token: String,
}

/// The fake token service. Cheap to clone: clones share state, so a test keeps one handle while
/// the server holds another.
#[derive(Clone)]
pub struct FakeEntra {
    state: Arc<Mutex<EntraState>>,
}

struct EntraState {
    base_url: Option<String>,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    object_id: String,
    mi_client_id: String,
    mi_object_id: String,
    identity_header: String,
    wi_client_id: String,
    wi_object_id: String,
    /// DER of the app's certificate, when it has one.
    certificate: Option<Vec<u8>>,
    federated_token: Option<String>,
    imds_requests: Vec<ImdsRequest>,
    lifetime: Duration,
    /// One operation: a token request, of either form.
    faults: FaultQueue<(), EntraFault>,
    requests: HashMap<TokenForm, usize>,
    issued: Vec<IssuedToken>,
}

impl Default for FakeEntra {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeEntra {
    /// A fake with the `DEFAULT_*` identities and a one hour token lifetime, not yet served.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(EntraState {
                base_url: None,
                tenant_id: DEFAULT_TENANT_ID.to_owned(),
                client_id: DEFAULT_CLIENT_ID.to_owned(),
                client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
                object_id: DEFAULT_OBJECT_ID.to_owned(),
                mi_client_id: DEFAULT_MI_CLIENT_ID.to_owned(),
                mi_object_id: DEFAULT_MI_OBJECT_ID.to_owned(),
                identity_header: DEFAULT_IDENTITY_HEADER.to_owned(),
                wi_client_id: DEFAULT_WI_CLIENT_ID.to_owned(),
                wi_object_id: DEFAULT_WI_OBJECT_ID.to_owned(),
                certificate: None,
                federated_token: None,
                imds_requests: Vec::new(),
                lifetime: Duration::from_secs(3600),
                faults: FaultQueue::default(),
                requests: HashMap::new(),
                issued: Vec::new(),
            })),
        }
    }

    /// A default fake served over HTTPS with the test PKI.
    pub async fn start_https(pki: &TestPki) -> Self {
        Self::new().serve_https(pki).await
    }

    /// Serves this (configured) fake over HTTPS on 127.0.0.1:0 and records its address.
    pub async fn serve_https(self, pki: &TestPki) -> Self {
        let addr = tls::serve_https(self.router(), pki).await;
        self.set_base_url(format!("https://{addr}"));
        self
    }

    /// The routes, to serve any way a test likes (then call [`FakeEntra::set_base_url`]).
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/{tenant}/oauth2/v2.0/token",
                post(client_credentials_token),
            )
            .route("/msi/token", get(managed_identity_token))
            .route("/metadata/identity/oauth2/token", get(imds_token))
            .fallback(|| async {
                aad_error(
                    StatusCode::NOT_FOUND,
                    "invalid_request",
                    90002,
                    "The fake Entra ID serves only /{tenant}/oauth2/v2.0/token, /msi/token and \
                     /metadata/identity/oauth2/token.",
                )
            })
            .with_state(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, EntraState> {
        // A panicking test must not poison the fake for the other assertions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- configuration (builder style; clones share state, so these also work after start) ----

    /// The service principal `ClientSecretCredential` authenticates as.
    pub fn with_client(self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        {
            let mut s = self.state();
            s.client_id = client_id.into();
            s.client_secret = secret.into();
        }
        self
    }

    /// Registers a certificate (DER) for the app: assertions signed by its key are accepted.
    pub fn with_certificate(self, der: Vec<u8>) -> Self {
        self.state().certificate = Some(der);
        self
    }

    /// The federated token the workload identity presents (the projected token file's content).
    pub fn with_federated_token(self, token: impl Into<String>) -> Self {
        self.state().federated_token = Some(token.into());
        self
    }

    /// Serves the routes over plain HTTP on 127.0.0.1:0 for the IMDS form, to be used as the
    /// `HTTP_PROXY` of the process under test (requests arrive in absolute form); its address.
    pub async fn serve_imds_proxy(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = self.router();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// How long issued tokens live (`exp - now`, `expires_in`).
    pub fn with_token_lifetime(self, lifetime: Duration) -> Self {
        self.state().lifetime = lifetime;
        self
    }

    /// Where the fake is reachable, e.g. `https://127.0.0.1:1234` (no trailing slash).
    pub fn set_base_url(&self, base_url: impl Into<String>) {
        self.state().base_url = Some(base_url.into().trim_end_matches('/').to_owned());
    }

    // ---- faults ----

    /// Queues a fault for the next token request of either form.
    pub fn push_fault(&self, fault: EntraFault) {
        self.state().faults.push((), fault);
    }

    /// Queues the same fault for the next `times` token requests.
    pub fn push_faults(&self, fault: EntraFault, times: usize) {
        self.state().faults.push_n((), fault, times);
    }

    pub fn pending_faults(&self) -> usize {
        self.state().faults.pending(&())
    }

    // ---- what tests read ----

    /// Base URL, e.g. `https://127.0.0.1:1234`; panics if the fake was never served.
    pub fn base_url(&self) -> String {
        self.state()
            .base_url
            .clone()
            .expect("FakeEntra is not served yet: use serve_https/start_https or set_base_url")
    }

    /// The authority host to give `azure_identity` (`ClientOptions.cloud` custom
    /// `authority_host`, or `AZURE_AUTHORITY_HOST`): the base URL itself.
    pub fn authority_host(&self) -> String {
        self.base_url()
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url(), self.tenant_id())
    }

    /// `{base}/msi/token`: the value for `IDENTITY_ENDPOINT`.
    pub fn msi_endpoint(&self) -> String {
        format!("{}/msi/token", self.base_url())
    }

    pub fn tenant_id(&self) -> String {
        self.state().tenant_id.clone()
    }

    pub fn client_id(&self) -> String {
        self.state().client_id.clone()
    }

    /// The client secret (tests assert it never shows up in logs either).
    pub fn client_secret(&self) -> String {
        self.state().client_secret.clone()
    }

    pub fn object_id(&self) -> String {
        self.state().object_id.clone()
    }

    pub fn workload_identity_client_id(&self) -> String {
        self.state().wi_client_id.clone()
    }

    /// Every request the IMDS endpoint answered (or refused), in order.
    pub fn imds_requests(&self) -> Vec<ImdsRequest> {
        self.state().imds_requests.clone()
    }

    pub fn managed_identity_client_id(&self) -> String {
        self.state().mi_client_id.clone()
    }

    pub fn managed_identity_object_id(&self) -> String {
        self.state().mi_object_id.clone()
    }

    /// The value for `IDENTITY_HEADER`.
    pub fn identity_header(&self) -> String {
        self.state().identity_header.clone()
    }

    pub fn token_lifetime(&self) -> Duration {
        self.state().lifetime
    }

    /// Requests received on one form's route, successful or not (faulted ones included).
    pub fn token_requests(&self, form: TokenForm) -> usize {
        self.state().requests.get(&form).copied().unwrap_or(0)
    }

    /// Requests received on both token routes.
    pub fn total_token_requests(&self) -> usize {
        self.state().requests.values().sum()
    }

    /// Every token issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.state().issued.clone()
    }

    /// Just the access token strings, for "no token in the logs" assertions.
    pub fn access_tokens(&self) -> Vec<String> {
        self.state()
            .issued
            .iter()
            .map(|t| t.access_token.clone())
            .collect()
    }

    /// Mints a client-credentials style token for `audience` without an HTTP request (not
    /// counted, not logged): for tests that call the fake ARM or Azurite directly.
    pub fn mint_token(&self, audience: &str) -> String {
        let s = self.state();
        let claims = token_claims(
            &s.tenant_id,
            &normalize_audience(audience),
            &s.client_id,
            &s.object_id,
            s.lifetime,
            OffsetDateTime::now_utc(),
        );
        mint_jwt(&claims)
    }

    /// Counts the request, then applies the next queued fault, if any: `Some(response)` for a
    /// status fault, `None` (after sleeping) for a delay or no fault.
    async fn enter(&self, form: TokenForm) -> Option<Response> {
        let fault = {
            let mut s = self.state();
            *s.requests.entry(form).or_default() += 1;
            s.faults.next(&())
        };
        match fault {
            None => None,
            Some(EntraFault::Delay(d)) => {
                tokio::time::sleep(d).await;
                None
            }
            Some(EntraFault::Status(code)) => {
                let status = StatusCode::from_u16(code).expect("fault status is a valid code");
                Some(aad_error(
                    status,
                    "temporarily_unavailable",
                    90033,
                    &format!("A transient error has occurred (fault injected: {code})."),
                ))
            }
        }
    }

    /// Mints, records and returns a token (`(access_token, exp)`).
    fn issue(&self, form: TokenForm, audience: &str) -> (String, OffsetDateTime) {
        let mut s = self.state();
        let (app, oid) = match form {
            TokenForm::ClientCredentials | TokenForm::ClientCertificate => {
                (s.client_id.clone(), s.object_id.clone())
            }
            TokenForm::WorkloadIdentity => (s.wi_client_id.clone(), s.wi_object_id.clone()),
            TokenForm::ManagedIdentity | TokenForm::Imds => {
                (s.mi_client_id.clone(), s.mi_object_id.clone())
            }
        };
        let now = OffsetDateTime::now_utc();
        let claims = token_claims(&s.tenant_id, audience, &app, &oid, s.lifetime, now);
        let token = mint_jwt(&claims);
        let expires_on = now + s.lifetime;
        s.issued.push(IssuedToken {
            form,
            audience: audience.to_owned(),
            access_token: token.clone(),
        });
        (token, expires_on)
    }
}

// ---- handlers ----

async fn client_credentials_token(
    State(entra): State<FakeEntra>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let (tenant_id, client_id, client_secret, wi_client_id) = {
        let s = entra.state();
        (
            s.tenant_id.clone(),
            s.client_id.clone(),
            s.client_secret.clone(),
            s.wi_client_id.clone(),
        )
    };
    let token_form = match (field("client_assertion").is_empty(), field("client_id")) {
        (true, _) => TokenForm::ClientCredentials,
        (false, id) if id == wi_client_id => TokenForm::WorkloadIdentity,
        (false, _) => TokenForm::ClientCertificate,
    };
    if let Some(faulted) = entra.enter(token_form).await {
        return faulted;
    }

    if tenant != tenant_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    for required in ["client_id", "grant_type", "scope"] {
        if field(required).is_empty() {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{required}'."),
            );
        }
    }
    if field("grant_type") != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type (the fake knows client_credentials).",
        );
    }
    if token_form != TokenForm::ClientCredentials {
        if let Some(refused) = check_assertion(&entra, token_form, &tenant, field) {
            return refused;
        }
    } else if field("client_id") != client_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'.",
                field("client_id")
            ),
        );
    }
    if token_form == TokenForm::ClientCredentials && field("client_secret") != client_secret {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID, for a secret added to app.",
        );
    }
    let scopes: Vec<&str> = field("scope").split_whitespace().collect();
    let [scope] = scopes.as_slice() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            28000,
            "Provided value for the input parameter scope is not valid because it contains more \
             than one resource.",
        );
    };
    if !scope.ends_with("/.default") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier."
            ),
        );
    }

    let audience = normalize_audience(scope);
    let (token, _) = entra.issue(token_form, &audience);
    let lifetime = entra.token_lifetime().as_secs();
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }),
    )
}

async fn managed_identity_token(
    State(entra): State<FakeEntra>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(faulted) = entra.enter(TokenForm::ManagedIdentity).await {
        return faulted;
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    let (expected_header, mi_client_id) = {
        let s = entra.state();
        (s.identity_header.clone(), s.mi_client_id.clone())
    };

    // App Service answers these with plain JSON errors; azure_identity maps any 400 to "the
    // requested identity has not been assigned to this resource".
    let msi_error = |status: StatusCode, message: String| {
        json_response(
            status,
            &json!({ "statusCode": status.as_u16(), "message": message }),
        )
    };
    let Some(secret) = headers.get("x-identity-header") else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "The x-identity-header request header is missing.".into(),
        );
    };
    if secret.as_bytes() != expected_header.as_bytes() {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "The x-identity-header value is not valid.".into(),
        );
    }
    if param("api-version") != MSI_API_VERSION {
        return msi_error(
            StatusCode::BAD_REQUEST,
            format!(
                "api-version '{}' is not supported; use {MSI_API_VERSION}.",
                param("api-version")
            ),
        );
    }
    if param("resource").is_empty() {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "The resource query parameter is required.".into(),
        );
    }
    let requested_client = param("client_id");
    if !requested_client.is_empty() && requested_client != mi_client_id {
        return msi_error(
            StatusCode::BAD_REQUEST,
            format!("No managed identity with client id '{requested_client}' is assigned."),
        );
    }

    let audience = normalize_audience(param("resource"));
    let (token, expires_on) = entra.issue(TokenForm::ManagedIdentity, &audience);
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            // A string of unix seconds, as App Service sends it (azure_identity parses a string).
            "expires_on": expires_on.unix_timestamp().to_string(),
            "resource": param("resource"),
            "token_type": "Bearer",
            "client_id": mi_client_id,
        }),
    )
}

/// Checks a `client_assertion`: the federated token itself for the workload identity, else a
/// JWT signed by the app's certificate. `Some` is the AADSTS refusal Entra ID would give.
fn check_assertion<'a>(
    entra: &FakeEntra,
    form: TokenForm,
    tenant: &str,
    field: impl Fn(&str) -> &'a str,
) -> Option<Response> {
    let invalid = |code: u32, description: &str| {
        aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        )
    };
    if field("client_assertion_type") != JWT_BEARER {
        return Some(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
        ));
    }
    let assertion = field("client_assertion");
    let (client_id, certificate, federated) = {
        let s = entra.state();
        (
            s.client_id.clone(),
            s.certificate.clone(),
            s.federated_token.clone(),
        )
    };
    if form == TokenForm::WorkloadIdentity {
        return match federated {
            Some(token) if token == assertion => None,
            _ => Some(invalid(
                700213,
                "No matching federated identity record found for presented assertion.",
            )),
        };
    }
    if field("client_id") != client_id {
        return Some(aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found.",
                field("client_id")
            ),
        ));
    }
    let Some(certificate) = certificate else {
        return Some(invalid(700027, "The app has no certificate credential."));
    };
    let audience = format!("{}/{tenant}/oauth2/v2.0/token", entra.base_url());
    verify_certificate_assertion(assertion, &certificate, &audience, &client_id)
        .err()
        .map(|reason| invalid(700027, &format!("Client assertion failed: {reason}")))
}

/// Verifies an RS256 client assertion against the certificate `der`: `x5t` names it, its key
/// signed it, and `aud`, `iss`, `sub`, `nbf`, `exp` and `jti` are as Entra ID requires.
pub fn verify_certificate_assertion(
    jwt: &str,
    der: &[u8],
    audience: &str,
    client_id: &str,
) -> Result<(), String> {
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    let (input, signature) = jwt.rsplit_once('.').ok_or("not a JWT")?;
    let (header, _) = input.split_once('.').ok_or("not a JWT")?;
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("the header is not base64url JSON")?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} (RS256 expected)", header["alg"]));
    }
    let thumbprint = URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, der));
    if header["x5t"] != thumbprint.as_str() {
        return Err("x5t does not name the registered certificate".into());
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url")?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, rsa_public_key(der)?)
        .verify(input.as_bytes(), &signature)
        .map_err(|_| "the signature does not verify with the certificate's key")?;
    let claims = jwt_claims(jwt)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let int = |name: &str| claims[name].as_i64().ok_or(format!("no {name}"));
    if claims["aud"] != audience {
        return Err(format!("aud {} (expected {audience})", claims["aud"]));
    }
    if claims["iss"] != client_id || claims["sub"] != client_id {
        return Err("iss and sub must be the client id".into());
    }
    if int("nbf")? > now + 60 || int("exp")? <= now || int("exp")? > now + 3600 {
        return Err("not within its valid time range".into());
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err("no jti".into());
    }
    Ok(())
}

/// The RSAPublicKey DER inside an X.509 certificate's SubjectPublicKeyInfo.
fn rsa_public_key(certificate: &[u8]) -> Result<&[u8], String> {
    /// The content of the DER element at the start of `der`, and what follows it.
    fn element(der: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
        let bad = || "malformed certificate".to_owned();
        let (&tag, rest) = der.split_first().ok_or_else(bad)?;
        let (&first, rest) = rest.split_first().ok_or_else(bad)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            let (bytes, rest) = rest.split_at_checked(n).ok_or_else(bad)?;
            (
                bytes.iter().fold(0, |l, b| (l << 8) | usize::from(*b)),
                rest,
            )
        };
        let (content, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        Ok((tag, content, rest))
    }
    let (_, cert, _) = element(certificate)?;
    let (_, tbs, _) = element(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature, issuer, validity, subject: skipped.
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..5 {
        rest = element(rest)?.2;
    }
    let (_, spki, _) = element(rest)?;
    let (_, bits, _) = element(element(spki)?.2)?;
    bits.split_first()
        .filter(|(unused, _)| **unused == 0)
        .map(|(_, key)| key)
        .ok_or("malformed public key".into())
}

async fn imds_token(
    State(entra): State<FakeEntra>,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    // Proxied: the absolute-form target names the host the client meant.
    let host = uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    entra.state().imds_requests.push(ImdsRequest {
        host,
        api_version: param("api-version").to_owned(),
    });
    if let Some(faulted) = entra.enter(TokenForm::Imds).await {
        return faulted;
    }
    let imds_error = |status: StatusCode, error: &str, description: &str| {
        json_response(
            status,
            &json!({ "error": error, "error_description": description }),
        )
    };
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if !IMDS_API_VERSIONS.contains(&param("api-version")) {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid or missing api-version",
        );
    }
    if param("resource").is_empty() {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required resource parameter not specified",
        );
    }
    let mi_client_id = entra.managed_identity_client_id();
    let requested = param("client_id");
    if !requested.is_empty() && requested != mi_client_id {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        );
    }
    let audience = normalize_audience(param("resource"));
    let (token, expires_on) = entra.issue(TokenForm::Imds, &audience);
    let lifetime = entra.token_lifetime().as_secs();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // IMDS sends its numbers as strings.
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "client_id": mi_client_id,
            "expires_in": lifetime.to_string(),
            "expires_on": expires_on.unix_timestamp().to_string(),
            "ext_expires_in": lifetime.to_string(),
            "not_before": now.to_string(),
            "resource": param("resource"),
            "token_type": "Bearer",
        }),
    )
}

// ---- JWT and JSON helpers (shared with the fake ARM) ----

/// A scope or resource as a token audience: without `/.default` and without a trailing `/`
/// (`https://management.azure.com/.default` -> `https://management.azure.com`).
pub fn normalize_audience(scope_or_resource: &str) -> String {
    let s = scope_or_resource.trim();
    let s = s.strip_suffix("/.default").unwrap_or(s);
    s.trim_end_matches('/').to_owned()
}

/// The claims of an app-only v1 access token as Entra issues them, `nbf`/`iat` a minute in the
/// past (clock skew) and `exp` = `now + lifetime`.
pub fn token_claims(
    tenant_id: &str,
    audience: &str,
    app_id: &str,
    object_id: &str,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Value {
    let now_secs = now.unix_timestamp();
    let issuer = format!("https://sts.windows.net/{tenant_id}/");
    json!({
        "aud": audience,
        "iss": issuer,
        "iat": now_secs - 60,
        "nbf": now_secs - 60,
        "exp": now_secs + lifetime.as_secs() as i64,
        "appid": app_id,
        "appidacr": "1",
        "idp": issuer,
        "idtyp": "app",
        "oid": object_id,
        "sub": object_id,
        "tid": tenant_id,
        "uti": Uuid::new_v4().simple().to_string(),
        "ver": "1.0",
    })
}

/// Signs `claims` as an HS256 JWT with [`TEST_SIGNING_KEY`].
pub fn mint_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(hs256(signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// The payload of a JWT, without checking the signature (for assertions in tests).
pub fn jwt_claims(token: &str) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT: expected three dot-separated parts".into());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("JWT payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("JWT payload is not JSON: {e}"))
}

/// The claims of a JWT this fake signed; an error if it is malformed, not HS256 or its signature
/// does not match [`TEST_SIGNING_KEY`].
pub fn verify_jwt(token: &str) -> Result<Value, String> {
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or("not a JWT: expected three dot-separated parts")?;
    let (header, _) = signing_input
        .split_once('.')
        .ok_or("not a JWT: expected three dot-separated parts")?;
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("JWT header is not base64url JSON")?;
    if header["alg"] != "HS256" {
        return Err(format!("unexpected JWT alg {}", header["alg"]));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "JWT signature is not base64url")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(TEST_SIGNING_KEY).expect("any key length");
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "JWT signature does not match the fake Entra ID key")?;
    jwt_claims(token)
}

fn hs256(data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(TEST_SIGNING_KEY).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A JSON response with the content type Azure services send.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    json_text_response(status, body.to_string())
}

/// Like [`json_response`] for an already serialized (or deliberately broken) body.
pub fn json_text_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// An Entra ID (AADSTS) error body, shaped as `login.microsoftonline.com` sends it.
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let timestamp = OffsetDateTime::now_utc();
    let trace_id = Uuid::new_v4();
    let correlation_id = Uuid::new_v4();
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: \
                 {correlation_id} Timestamp: {}",
                aad_timestamp(timestamp)
            ),
            "error_codes": [code],
            "timestamp": aad_timestamp(timestamp),
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// `2025-04-04 21:10:04Z`, the format of AAD's `timestamp` field.
fn aad_timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
