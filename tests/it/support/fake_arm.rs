//! A fake Azure Resource Manager (`https://management.azure.com`) serving the Azure Media
//! Services asset and encoding operations the service calls, for one subscription / resource
//! group / account:
//!
//! - `GET  .../mediaServices/{account}/assets/{name}?api-version=2023-01-01` (Assets - Get)
//! - `GET  .../mediaServices/{account}/assets?api-version=2023-01-01[&$filter][&$top]`
//!   (Assets - List, paged with absolute `@odata.nextLink`s carrying a `$skiptoken`)
//! - `POST .../mediaServices/{account}/assets/{name}/listContainerSas?api-version=2023-01-01`
//! - `PUT  .../mediaServices/{account}/assets/{name}?api-version=2023-01-01`
//!   (Assets - CreateOrUpdate: `assets-create.json`, 201 then 200; container `asset-<assetId>`
//!   unless given; the container is created in Azurite when an output sink is set)
//! - `PUT  .../mediaServices/{account}/transforms/{t}?api-version=2022-07-01`
//!   (Transforms - CreateOrUpdate: `transforms-create.json`, 201 then 200; presets validated, see
//!   [`super::fake_encoder::ams_validate_transform`])
//! - `PUT|GET .../mediaServices/{account}/transforms/{t}/jobs/{j}?api-version=2022-07-01`
//!   (Jobs - Create / Get: `jobs-create.json`, `jobs-get-by-name.json`; the state machine, the
//!   file names and what a finished job writes into Azurite are in [`super::fake_encoder`])
//!
//! AMS was retired in June 2024, so the contract is the last published swagger: every success
//! body is built from the official examples in `tests/fixtures/ams-examples/` (copies of shared/reference/ams-examples; loaded at run
//! time, asset fields substituted), so the fake cannot drift from them silently:
//! - Get: `assets-get-by-name.json` `responses.200.body`;
//! - List: `assets-list-all.json` `responses.200.body` (its `value[0]` as the item shape) plus
//!   `@odata.nextLink` from the swagger's `AssetCollection` (no example shows one);
//! - listContainerSas: `assets-list-sas-urls.json` `responses.200.body`;
//! - default subscription / resource group / account: `assets-get-by-name.json` `parameters`.
//!
//! Errors use ARM's `{"error":{"code","message"}}` envelope (the swagger's `default` response).
//! Like ARM, the fake checks the api-version and the bearer token (an HS256 JWT signed by the fake
//! Entra ID, audience `https://management.azure.com`), and it counts every hit, so tests can
//! assert how many upstream calls the service made. Faults are queued per operation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::fake_encoder::{
    self, AMS_BASENAME_MAX, Advance, DEFAULT_INPUT_DURATION_SECS, DEFAULT_JOB_STEPS, JobOutcome,
    JobOutputSpec, JobRecord, JobRun, OutputSink, WriteRefusal,
};
use super::fake_entra::{json_response, verify_jwt};
use super::faults::{self, FaultQueue, RestFault};
use super::odata::{Filter, decode_skiptoken, encode_skiptoken, parse_filter};
use super::tls::{self, TestPki};

/// The api-version of the asset operations (the swagger the asset examples come from).
pub const API_VERSION: &str = "2023-01-01";
/// The api-version of the transform and job operations (Encoding 2022-07-01).
pub const ENCODING_API_VERSION: &str = "2022-07-01";
/// The audience ARM tokens must carry (Entra drops the trailing `/` of the resource).
pub const ARM_AUDIENCE: &str = "https://management.azure.com";
/// AMS's default (and maximum) page size for Assets - List.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// listContainerSas refuses expiry times further ahead than this (swagger: "must be less than 24
/// hours from the current time").
pub const MAX_SAS_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// An AMS asset the fake knows. Build with [`FakeAsset::new`] and the setters.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeAsset {
    pub name: String,
    pub asset_id: Uuid,
    pub alternate_id: Option<String>,
    pub description: Option<String>,
    /// `None` -> `asset-{assetId}`, the container AMS generates (see `assets-create.json`).
    pub container: Option<String>,
    /// `None` -> the property is left out, as for assets in the account's primary storage.
    pub storage_account_name: Option<String>,
    /// `None` or `MediaStorageClientEncryption`.
    pub storage_encryption_format: String,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
}

impl FakeAsset {
    /// An unencrypted asset in the default container, created now.
    pub fn new(name: impl Into<String>, asset_id: Uuid) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            name: name.into(),
            asset_id,
            alternate_id: None,
            description: None,
            container: None,
            storage_account_name: None,
            storage_encryption_format: "None".to_owned(),
            created: now,
            last_modified: now,
        }
    }

    pub fn alternate_id(mut self, alternate_id: impl Into<String>) -> Self {
        self.alternate_id = Some(alternate_id.into());
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    pub fn container(mut self, container: impl Into<String>) -> Self {
        self.container = Some(container.into());
        self
    }

    pub fn storage_account_name(mut self, account: impl Into<String>) -> Self {
        self.storage_account_name = Some(account.into());
        self
    }

    pub fn storage_encryption_format(mut self, format: impl Into<String>) -> Self {
        self.storage_encryption_format = format.into();
        self
    }

    /// The blob container the asset's files live in.
    pub fn container_name(&self) -> String {
        self.container
            .clone()
            .unwrap_or_else(|| format!("asset-{}", self.asset_id))
    }
}

/// The ARM operations the fake serves; counters and fault queues are kept per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArmOp {
    Get,
    List,
    ListContainerSas,
    /// `PUT .../transforms/{t}` (2022-07-01)
    PutTransform,
    /// `PUT .../assets/{name}` (2023-01-01)
    PutAsset,
    /// `PUT .../transforms/{t}/jobs/{j}` (2022-07-01)
    PutJob,
    /// `GET .../transforms/{t}/jobs/{j}` (2022-07-01)
    GetJob,
    /// `POST .../transforms/{t}/jobs/{j}/cancelJob` (2022-07-01, `jobs-cancel.json`)
    CancelJob,
}

impl ArmOp {
    /// The api-version ARM accepts for this operation.
    pub fn api_version(self) -> &'static str {
        match self {
            ArmOp::Get | ArmOp::List | ArmOp::ListContainerSas | ArmOp::PutAsset => API_VERSION,
            ArmOp::PutTransform | ArmOp::PutJob | ArmOp::GetJob | ArmOp::CancelJob => {
                ENCODING_API_VERSION
            }
        }
    }

    fn is_write(self) -> bool {
        matches!(
            self,
            ArmOp::PutTransform | ArmOp::PutAsset | ArmOp::PutJob | ArmOp::CancelJob
        )
    }
}

/// The bearer token seen on the latest request.
#[derive(Clone, Debug)]
pub struct LastAuthorization {
    pub operation: Option<ArmOp>,
    /// The raw `Authorization` header, if any.
    pub header: Option<String>,
    /// The token's claims if it decoded (signature not required for this record).
    pub claims: Option<Value>,
}

/// Mints the `assetContainerSasUrls` for listContainerSas: `(asset, permissions, expiry)`, where
/// permissions is `Read`, `ReadWrite` or `ReadWriteDelete` as requested.
pub type SasMinter = Box<MintFn>;
type MintFn = dyn Fn(&FakeAsset, &str, OffsetDateTime) -> Vec<String> + Send + Sync;

/// The fake ARM. Cheap to clone: clones share state.
#[derive(Clone)]
pub struct FakeArm {
    state: Arc<Mutex<ArmState>>,
    /// Serialises job GETs, so a run is finalised (outputs written) exactly once.
    jobs_gate: Arc<tokio::sync::Mutex<()>>,
}

/// A transform as PUT.
#[derive(Clone, Debug)]
struct StoredTransform {
    name: String,
    /// The request's `properties`.
    properties: Value,
    created: OffsetDateTime,
    last_modified: OffsetDateTime,
}

struct ArmState {
    base_url: Option<String>,
    subscription_id: String,
    resource_group: String,
    account: String,
    assets: Vec<FakeAsset>,
    page_size: usize,
    forbidden: bool,
    minter: Option<Arc<MintFn>>,
    faults: FaultQueue<ArmOp, RestFault>,
    hits: HashMap<ArmOp, usize>,
    total_hits: usize,
    last_authorization: Option<LastAuthorization>,
    transforms: Vec<StoredTransform>,
    jobs: Vec<JobRecord>,
    sink: Option<OutputSink>,
    write_refusal: Option<WriteRefusal>,
    next_outcome: Option<JobOutcome>,
    job_steps: usize,
    input_duration_secs: u64,
}

impl Default for FakeArm {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeArm {
    /// No assets, the examples' subscription / resource group / account, page size 1000.
    pub fn new() -> Self {
        let params = &templates().params;
        Self {
            state: Arc::new(Mutex::new(ArmState {
                base_url: None,
                subscription_id: params.subscription_id.clone(),
                resource_group: params.resource_group.clone(),
                account: params.account.clone(),
                assets: Vec::new(),
                page_size: DEFAULT_PAGE_SIZE,
                forbidden: false,
                minter: None,
                faults: FaultQueue::default(),
                hits: HashMap::new(),
                total_hits: 0,
                last_authorization: None,
                transforms: Vec::new(),
                jobs: Vec::new(),
                sink: None,
                write_refusal: None,
                next_outcome: None,
                job_steps: DEFAULT_JOB_STEPS,
                input_duration_secs: DEFAULT_INPUT_DURATION_SECS,
            })),
            jobs_gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A default fake served over HTTPS with the test PKI.
    pub async fn start_https(pki: &TestPki) -> Self {
        Self::new().serve_https(pki).await
    }

    /// Serves this (configured) fake over HTTPS on 127.0.0.1:0 and records its address (the
    /// base of the `@odata.nextLink`s).
    pub async fn serve_https(self, pki: &TestPki) -> Self {
        let addr = tls::serve_https(self.router(), pki).await;
        self.set_base_url(format!("https://{addr}"));
        self
    }

    /// The routes, to serve any way a test likes (then call [`FakeArm::set_base_url`]).
    /// Paths are matched by hand, case-insensitively like ARM, so both `mediaServices` (request
    /// template) and `mediaservices` (returned ids) work and wrong scopes get ARM's own codes.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, ArmState> {
        // A panicking test must not poison the fake for the other assertions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- configuration ----

    /// Assets per List page (AMS: 1000).
    pub fn with_page_size(self, page_size: usize) -> Self {
        assert!(page_size > 0, "page size must be positive");
        self.state().page_size = page_size;
        self
    }

    /// Where the fake is reachable, e.g. `https://127.0.0.1:1234`: the base of nextLinks.
    pub fn set_base_url(&self, base_url: impl Into<String>) {
        self.state().base_url = Some(base_url.into().trim_end_matches('/').to_owned());
    }

    /// Adds (or replaces, by name) an asset.
    pub fn add_asset(&self, asset: FakeAsset) {
        insert_asset(&mut self.state(), asset);
    }

    /// When set, authenticated requests get 403 `AuthorizationFailed` (no role assignment).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.state().forbidden = forbidden;
    }

    /// How listContainerSas makes its URLs (e.g. real SAS URLs for Azurite). Without one, the
    /// fake answers two URLs shaped like the example's (not usable against any storage).
    pub fn set_container_sas_minter(&self, minter: SasMinter) {
        self.state().minter = Some(Arc::from(minter));
    }

    // ---- encoding ----

    /// Where finished jobs write their outputs (and where PUT asset creates containers).
    /// Without one, a job reaching `Finished` panics with a clear message.
    pub fn set_output_sink(&self, sink: OutputSink) {
        self.state().sink = Some(sink);
    }

    /// While set, every PUT (transform, asset, job) answers this status with ARM's error
    /// envelope and changes nothing; reads keep working.
    pub fn set_writes_refused(&self, refusal: Option<WriteRefusal>) {
        self.state().write_refusal = refusal;
    }

    /// The next job created ends this way (then back to [`JobOutcome::Finish`]).
    pub fn set_next_job_outcome(&self, outcome: JobOutcome) {
        self.state().next_outcome = Some(outcome);
    }

    /// Job GETs from creation to the final state, for jobs created from now on (default 2).
    pub fn set_job_steps(&self, steps: usize) {
        assert!(steps >= 1, "a job needs at least one step");
        self.state().job_steps = steps;
    }

    /// The job as Jobs - Get would answer it now, without advancing it.
    pub fn job(&self, transform: &str, job: &str) -> Option<Value> {
        let s = self.state();
        find_job(&s, transform, job).map(|i| job_json(&s, &s.jobs[i]))
    }

    /// The stored transform's `properties`, as the last PUT sent them.
    pub fn transform(&self, name: &str) -> Option<Value> {
        let s = self.state();
        s.transforms
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .map(|t| t.properties.clone())
    }

    /// An asset, whether added by the test or created by Assets - CreateOrUpdate.
    pub fn asset(&self, name: &str) -> Option<FakeAsset> {
        let s = self.state();
        s.assets
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// Absolute URL of a transform, with `?api-version=2022-07-01`.
    pub fn transform_url(&self, name: &str) -> String {
        format!(
            "{}{}/transforms/{}?api-version={ENCODING_API_VERSION}",
            self.base_url(),
            self.account_path(),
            utf8_percent_encode(name, PATH_SEGMENT)
        )
    }

    /// Absolute URL of a job, with `?api-version=2022-07-01`.
    pub fn job_url(&self, transform: &str, job: &str) -> String {
        format!(
            "{}{}/transforms/{}/jobs/{}?api-version={ENCODING_API_VERSION}",
            self.base_url(),
            self.account_path(),
            utf8_percent_encode(transform, PATH_SEGMENT),
            utf8_percent_encode(job, PATH_SEGMENT)
        )
    }

    // ---- faults ----

    /// Queues a fault for the next request of `op`.
    pub fn push_fault(&self, op: ArmOp, fault: RestFault) {
        self.push_faults(op, fault, 1);
    }

    /// Queues the same fault for the next `times` requests of `op`.
    pub fn push_faults(&self, op: ArmOp, fault: RestFault, times: usize) {
        assert!(
            op == ArmOp::List || fault != RestFault::NextLinkLoop,
            "NextLinkLoop only applies to ArmOp::List"
        );
        self.state().faults.push_n(op, fault, times);
    }

    /// Faults still queued for `op`.
    pub fn pending_faults(&self, op: ArmOp) -> usize {
        self.state().faults.pending(&op)
    }

    // ---- what tests read ----

    /// Base URL, e.g. `https://127.0.0.1:1234`; panics if the fake was never served.
    pub fn base_url(&self) -> String {
        self.state()
            .base_url
            .clone()
            .expect("FakeArm is not served yet: use serve_https/start_https or set_base_url")
    }

    pub fn subscription_id(&self) -> String {
        self.state().subscription_id.clone()
    }

    pub fn resource_group(&self) -> String {
        self.state().resource_group.clone()
    }

    pub fn account(&self) -> String {
        self.state().account.clone()
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Media/mediaServices/{account}`
    pub fn account_path(&self) -> String {
        let s = self.state();
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaServices/{}",
            s.subscription_id, s.resource_group, s.account
        )
    }

    /// Absolute URL of the assets collection, with `?api-version=2023-01-01`.
    pub fn assets_url(&self) -> String {
        format!(
            "{}{}/assets?api-version={API_VERSION}",
            self.base_url(),
            self.account_path()
        )
    }

    /// Absolute URL of one asset, with `?api-version=2023-01-01`.
    pub fn asset_url(&self, name: &str) -> String {
        format!(
            "{}{}/assets/{}?api-version={API_VERSION}",
            self.base_url(),
            self.account_path(),
            utf8_percent_encode(name, PATH_SEGMENT)
        )
    }

    /// Absolute URL of an asset's listContainerSas action, with `?api-version=2023-01-01`.
    pub fn list_container_sas_url(&self, name: &str) -> String {
        format!(
            "{}{}/assets/{}/listContainerSas?api-version={API_VERSION}",
            self.base_url(),
            self.account_path(),
            utf8_percent_encode(name, PATH_SEGMENT)
        )
    }

    /// Requests routed to `op` (all outcomes: faults, 4xx and 200 alike).
    pub fn hits(&self, op: ArmOp) -> usize {
        self.state().hits.get(&op).copied().unwrap_or(0)
    }

    /// Every request the fake received, unknown routes included.
    pub fn total_hits(&self) -> usize {
        self.state().total_hits
    }

    pub fn last_authorization(&self) -> Option<LastAuthorization> {
        self.state().last_authorization.clone()
    }
}

// ---- request handling ----

/// What a request path resolved to.
struct Target {
    op: ArmOp,
    subscription_id: String,
    resource_group: String,
    account: String,
    asset: Option<String>,
    transform: Option<String>,
    job: Option<String>,
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Media/mediaServices/{a}/assets
/// [/{name}[/listContainerSas]]` or `.../transforms/{t}[/jobs/{j}]`, literal segments compared
/// case-insensitively as ARM does.
fn route(method: &Method, path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let literal = |i: usize, expected: &str| {
        segments
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(expected))
    };
    let value = |i: usize| {
        percent_decode_str(segments[i])
            .decode_utf8_lossy()
            .into_owned()
    };
    let prefix_ok = segments.len() >= 9
        && literal(0, "subscriptions")
        && literal(2, "resourceGroups")
        && literal(4, "providers")
        && literal(5, "Microsoft.Media")
        && literal(6, "mediaServices");
    if !prefix_ok {
        return None;
    }
    let named = |i: usize| segments.get(i).is_some_and(|s| !s.is_empty());
    let (op, asset, transform, job) = if literal(8, "assets") {
        match (method, segments.len()) {
            (&Method::GET, 9) => (ArmOp::List, None, None, None),
            (&Method::GET, 10) if named(9) => (ArmOp::Get, Some(value(9)), None, None),
            (&Method::PUT, 10) if named(9) => (ArmOp::PutAsset, Some(value(9)), None, None),
            (&Method::POST, 11) if literal(10, "listContainerSas") && named(9) => {
                (ArmOp::ListContainerSas, Some(value(9)), None, None)
            }
            _ => return None,
        }
    } else if literal(8, "transforms") && named(9) {
        match (method, segments.len()) {
            (&Method::PUT, 10) => (ArmOp::PutTransform, None, Some(value(9)), None),
            (&Method::PUT, 12) if literal(10, "jobs") && named(11) => {
                (ArmOp::PutJob, None, Some(value(9)), Some(value(11)))
            }
            (&Method::GET, 12) if literal(10, "jobs") && named(11) => {
                (ArmOp::GetJob, None, Some(value(9)), Some(value(11)))
            }
            (&Method::POST, 13) if literal(10, "jobs") && named(11) && literal(12, "cancelJob") => {
                (ArmOp::CancelJob, None, Some(value(9)), Some(value(11)))
            }
            _ => return None,
        }
    } else {
        return None;
    };
    Some(Target {
        op,
        subscription_id: value(1),
        resource_group: value(3),
        account: value(7),
        asset,
        transform,
        job,
    })
}

async fn handle(
    State(arm): State<FakeArm>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = respond(arm, method, uri, headers, body).await;
    // ARM stamps every response; clients log it for support cases.
    response.headers_mut().insert(
        "x-ms-request-id",
        HeaderValue::from_str(&Uuid::new_v4().to_string()).expect("a UUID is a header value"),
    );
    response
}

async fn respond(
    arm: FakeArm,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = route(&method, uri.path());
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    // Count and record first: every request that reached the fake is a hit, whatever follows.
    let fault = {
        let mut s = arm.state();
        s.total_hits += 1;
        let op = target.as_ref().map(|t| t.op);
        if let Some(op) = op {
            *s.hits.entry(op).or_default() += 1;
        }
        s.last_authorization = Some(LastAuthorization {
            operation: op,
            claims: authorization
                .as_deref()
                .and_then(bearer_token)
                .and_then(|t| super::fake_entra::jwt_claims(t).ok()),
            header: authorization.clone(),
        });
        op.and_then(|op| s.faults.next(&op))
    };

    let Some(target) = target else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "The fake ARM serves only Assets - Get, List, ListContainerSas and \
                 CreateOrUpdate, Transforms - CreateOrUpdate and Jobs - Create, Get and Cancel \
                 Job; not \
                 {method} {}.",
                uri.path()
            ),
        );
    };

    let proceed = match faults::apply(fault, "ARM", arm_error, arm_throttled).await {
        Ok(proceed) => proceed,
        Err(answer) => return answer,
    };

    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();

    let response = match rejection(&arm, &target, authorization.as_deref(), &query) {
        Some(response) => response,
        None => match (target.op, write_refusal(&arm, target.op)) {
            (_, Some(refused)) => refused,
            (ArmOp::Get, None) => get_asset(&arm, &target),
            (ArmOp::List, None) => list_assets(&arm, uri.path(), &query, proceed.next_link_loop),
            (ArmOp::ListContainerSas, None) => list_container_sas(&arm, &target, &body),
            (ArmOp::PutTransform, None) => put_transform(&arm, &target, &body),
            (ArmOp::PutAsset, None) => put_asset(&arm, &target, &body).await,
            (ArmOp::PutJob, None) => put_job(&arm, &target, &body),
            (ArmOp::GetJob, None) => get_job(&arm, &target).await,
            (ArmOp::CancelJob, None) => cancel_job(&arm, &target).await,
        },
    };
    proceed.finish(response).await
}

/// ARM's checks before the resource provider sees the request: token, api-version, role
/// assignment, then the scope (subscription, resource group, account). `Some` = rejected.
fn rejection(
    arm: &FakeArm,
    target: &Target,
    authorization: Option<&str>,
    query: &[(String, String)],
) -> Option<Response> {
    if let Some(rejected) = token_rejection(authorization) {
        return Some(rejected);
    }

    let versions: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "api-version")
        .map(|(_, v)| v.as_str())
        .collect();
    if versions.is_empty() {
        return Some(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    }
    let supported = target.op.api_version();
    if versions.iter().any(|v| *v != supported) {
        return Some(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{}' is invalid. The supported versions are '{supported}'.",
                versions.join(",")
            ),
        ));
    }

    let s = arm.state();
    if s.forbidden {
        let action = match target.op {
            ArmOp::Get | ArmOp::List => "Microsoft.Media/mediaservices/assets/read",
            ArmOp::ListContainerSas => {
                "Microsoft.Media/mediaservices/assets/listContainerSas/action"
            }
            ArmOp::PutAsset => "Microsoft.Media/mediaservices/assets/write",
            ArmOp::PutTransform => "Microsoft.Media/mediaservices/transforms/write",
            ArmOp::PutJob => "Microsoft.Media/mediaservices/transforms/jobs/write",
            ArmOp::GetJob => "Microsoft.Media/mediaservices/transforms/jobs/read",
            ArmOp::CancelJob => "Microsoft.Media/mediaservices/transforms/jobs/cancelJob/action",
        };
        let oid = authorization
            .and_then(bearer_token)
            .and_then(|t| super::fake_entra::jwt_claims(t).ok())
            .and_then(|c| c["oid"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Some(arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            &format!(
                "The client '{oid}' with object id '{oid}' does not have authorization to \
                 perform action '{action}' over scope '/subscriptions/{}/resourceGroups/{}/\
                 providers/Microsoft.Media/mediaServices/{}' or the scope is invalid. If access \
                 was recently granted, please refresh your credentials.",
                s.subscription_id, s.resource_group, s.account
            ),
        ));
    }
    if !target
        .subscription_id
        .eq_ignore_ascii_case(&s.subscription_id)
    {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!(
                "The subscription '{}' could not be found.",
                target.subscription_id
            ),
        ));
    }
    if !target
        .resource_group
        .eq_ignore_ascii_case(&s.resource_group)
    {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!(
                "Resource group '{}' could not be found.",
                target.resource_group
            ),
        ));
    }
    if !target.account.eq_ignore_ascii_case(&s.account) {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "ParentResourceNotFound",
            &format!(
                "Can not perform requested operation on nested resource. Parent resource '{}' \
                 not found.",
                target.account
            ),
        ));
    }
    None
}

/// `Authorization: Bearer <jwt>` signed by the fake Entra ID, for ARM, not expired; `Some` =
/// rejected.
fn token_rejection(authorization: Option<&str>) -> Option<Response> {
    let Some(authorization) = authorization else {
        return Some(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    let Some(token) = bearer_token(authorization) else {
        return Some(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is not a Bearer token.",
        ));
    };
    let claims = match verify_jwt(token) {
        Ok(claims) => claims,
        Err(e) => {
            return Some(unauthorized(
                "InvalidAuthenticationToken",
                &format!("The access token is invalid: {e}."),
            ));
        }
    };
    let audience = claims["aud"].as_str().unwrap_or_default();
    if audience.trim_end_matches('/') != ARM_AUDIENCE {
        return Some(unauthorized(
            "InvalidAuthenticationToken",
            &format!(
                "The access token has been obtained for wrong audience or resource \
                 '{audience}'. It should exactly match with one of the allowed audiences \
                 '{ARM_AUDIENCE}', '{ARM_AUDIENCE}/'."
            ),
        ));
    }
    if !claims["iss"]
        .as_str()
        .is_some_and(|i| i.starts_with("https://sts.windows.net/"))
    {
        return Some(unauthorized(
            "InvalidAuthenticationToken",
            "The access token is from an unknown issuer.",
        ));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (Some(nbf), Some(exp)) = (claims["nbf"].as_i64(), claims["exp"].as_i64()) else {
        return Some(unauthorized(
            "InvalidAuthenticationToken",
            "The access token has no nbf/exp claims.",
        ));
    };
    if exp <= now {
        return Some(unauthorized(
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        ));
    }
    // ARM allows five minutes of clock skew.
    if nbf > now + 300 {
        return Some(unauthorized(
            "InvalidAuthenticationToken",
            "The access token is not yet valid.",
        ));
    }
    None
}

fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn get_asset(arm: &FakeArm, target: &Target) -> Response {
    let name = target.asset.as_deref().unwrap_or_default();
    let s = arm.state();
    match s.assets.iter().find(|a| a.name.eq_ignore_ascii_case(name)) {
        Some(asset) => json_response(StatusCode::OK, &asset_json(&templates().get, asset, &s)),
        None => asset_not_found(&s, name),
    }
}

fn list_assets(
    arm: &FakeArm,
    path: &str,
    query: &[(String, String)],
    start_loop: bool,
) -> Response {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(orderby) = param("$orderby") {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("The fake ARM does not implement $orderby ('{orderby}')."),
        );
    }
    let filter = match param("$filter")
        .map(|f| parse_filter(f, "fake ARM"))
        .transpose()
    {
        Ok(filter) => filter,
        Err(message) => return arm_error(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let top = match param("$top").map(str::parse::<usize>).transpose() {
        Ok(top) => top,
        Err(_) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "$top must be a non-negative integer.",
            );
        }
    };
    let (offset, looping) = match param("$skiptoken").map(decode_skiptoken).transpose() {
        Ok(token) => token.unwrap_or((0, false)),
        Err(message) => return arm_error(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };

    let s = arm.state();
    let matched: Vec<&FakeAsset> = s
        .assets
        .iter()
        .filter(|a| filter.as_ref().is_none_or(|f| filter_matches(f, a)))
        .collect();
    let end = top.unwrap_or(usize::MAX).min(matched.len());
    let start = offset.min(end);
    let page_end = (start + s.page_size).min(end);

    let template = &templates().list;
    let mut body = template.clone();
    let items: Vec<Value> = matched[start..page_end]
        .iter()
        .map(|a| asset_json(&templates().list_item, a, &s))
        .collect();
    body["value"] = Value::Array(items);

    let next = if looping || start_loop {
        Some(encode_skiptoken(start, true))
    } else if page_end < end {
        Some(encode_skiptoken(page_end, false))
    } else {
        None
    };
    if let Some(skiptoken) = next {
        let Some(base) = s.base_url.clone() else {
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "FakeArm needs set_base_url (or serve_https) to build @odata.nextLink.",
            );
        };
        // The original query (api-version, $filter, $top) plus the new $skiptoken, with `$`
        // left literal as ARM writes it.
        let mut link = format!("{base}{path}?api-version={API_VERSION}");
        for key in ["$filter", "$top"] {
            if let Some(value) = param(key) {
                link.push_str(&format!(
                    "&{key}={}",
                    utf8_percent_encode(value, QUERY_VALUE)
                ));
            }
        }
        link.push_str(&format!("&$skiptoken={skiptoken}"));
        body["@odata.nextLink"] = Value::String(link);
    }
    json_response(StatusCode::OK, &body)
}

fn list_container_sas(arm: &FakeArm, target: &Target, body: &[u8]) -> Response {
    let name = target.asset.as_deref().unwrap_or_default();
    let (asset, minter) = {
        let s = arm.state();
        match s.assets.iter().find(|a| a.name.eq_ignore_ascii_case(name)) {
            Some(asset) => (asset.clone(), s.minter.clone()),
            None => return asset_not_found(&s, name),
        }
    };
    let Ok(input) = serde_json::from_slice::<Value>(body) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let permissions = input["permissions"].as_str().unwrap_or_default();
    if !["Read", "ReadWrite", "ReadWriteDelete"].contains(&permissions) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Invalid permissions '{permissions}': expected Read, ReadWrite or ReadWriteDelete."
            ),
        );
    }
    let Some(expiry) = input["expiryTime"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "expiryTime is required and must be an ISO 8601 date-time.",
        );
    };
    let now = OffsetDateTime::now_utc();
    if expiry <= now || expiry > now + MAX_SAS_LIFETIME {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The expiry time must be in the future and less than 24 hours from the current time.",
        );
    }

    // Called without the lock held: the minter is test code and may call back into the fake.
    let urls = match minter {
        Some(mint) => mint(&asset, permissions, expiry),
        None => example_like_sas_urls(&asset, permissions, expiry),
    };
    let mut body = templates().sas.clone();
    body["assetContainerSasUrls"] = json!(urls);
    json_response(StatusCode::OK, &body)
}

/// Two URLs (key 1, key 2) in the shape of `assets-list-sas-urls.json`.
fn example_like_sas_urls(
    asset: &FakeAsset,
    permissions: &str,
    expiry: OffsetDateTime,
) -> Vec<String> {
    let sp = match permissions {
        "Read" => "lr",
        "ReadWrite" => "lrw",
        _ => "lrwd",
    };
    let account = asset.storage_account_name.as_deref().unwrap_or("storage0");
    let se = utf8_percent_encode(
        &expiry
            .replace_nanosecond(0)
            .expect("0 ns")
            .format(&Rfc3339)
            .expect("RFC 3339"),
        QUERY_VALUE,
    )
    .to_string();
    let container = asset.container_name();
    (1..=2)
        .map(|key| {
            let query = format!("sr=c&sig=fake-signature-from-key-{key}&se={se}&sp={sp}");
            format!("https://{account}.blob.core.windows.net/{container}?{query}")
        })
        .collect()
}

fn asset_not_found(s: &ArmState, name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.Media/mediaservices/{}/assets/{name}' under resource group \
             '{}' was not found. For more details please go to \
             https://aka.ms/ARMResourceNotFoundFix",
            s.account, s.resource_group
        ),
    )
}

// ---- encoding: assets PUT, transforms, jobs ----

fn insert_asset(s: &mut ArmState, asset: FakeAsset) {
    s.assets
        .retain(|a| !a.name.eq_ignore_ascii_case(&asset.name));
    s.assets.push(asset);
    // List order: by name, as in assets-list-all.json.
    s.assets.sort_by(|a, b| a.name.cmp(&b.name));
}

/// `Some` = every write is refused ([`FakeArm::set_writes_refused`]).
fn write_refusal(arm: &FakeArm, op: ArmOp) -> Option<Response> {
    if !op.is_write() {
        return None;
    }
    let refusal = arm.state().write_refusal.clone()?;
    let status = StatusCode::from_u16(refusal.status).expect("refusal status is a valid code");
    Some(arm_error(status, &refusal.code, &refusal.message))
}

/// The body as a JSON object, if it is one (else answer [`invalid_body`]).
fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn invalid_body() -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestContent",
        "The request content was invalid and could not be deserialized.",
    )
}

fn bad_request(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Assets - CreateOrUpdate (`assets-create.json`): 201 with a new `assetId` and, unless the
/// body gives one, the container `asset-<assetId>`; 200 for an existing asset, whose
/// `alternateId` / `description` the body may change (AMS does not move an asset's container).
/// `storageAccountName` comes from the body, else it is left out. With an output sink, the
/// container is created in Azurite (as AMS does; "already exists" is fine).
async fn put_asset(arm: &FakeArm, target: &Target, body: &[u8]) -> Response {
    let name = target.asset.clone().unwrap_or_default();
    let Some(input) = parse_body(body) else {
        return invalid_body();
    };
    let props = &input["properties"];
    if !(props.is_object() || props.is_null()) {
        return bad_request("properties must be an object.");
    }
    let mut fields = HashMap::new();
    for key in [
        "alternateId",
        "description",
        "container",
        "storageAccountName",
    ] {
        match props.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) => {
                fields.insert(key, v.clone());
            }
            Some(_) => return bad_request(&format!("properties.{key} must be a string.")),
        }
    }
    if let Some(container) = fields.get("container") {
        let valid = (3..=63).contains(&container.len())
            && container
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !container.starts_with('-')
            && !container.ends_with('-')
            && !container.contains("--");
        if !valid {
            return bad_request(&format!(
                "properties.container '{container}' is not a valid container name."
            ));
        }
    }
    let (status, asset, sink) = {
        let mut s = arm.state();
        let now = OffsetDateTime::now_utc();
        let existing = s
            .assets
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(&name))
            .cloned();
        let (status, asset) = match existing {
            Some(mut asset) => {
                if let Some(v) = fields.get("alternateId") {
                    asset.alternate_id = Some(v.clone());
                }
                if let Some(v) = fields.get("description") {
                    asset.description = Some(v.clone());
                }
                asset.last_modified = now;
                (StatusCode::OK, asset)
            }
            None => {
                let mut asset = FakeAsset::new(&name, Uuid::new_v4());
                asset.alternate_id = fields.get("alternateId").cloned();
                asset.description = fields.get("description").cloned();
                asset.container = fields.get("container").cloned();
                asset.storage_account_name = fields.get("storageAccountName").cloned();
                (StatusCode::CREATED, asset)
            }
        };
        insert_asset(&mut s, asset.clone());
        (status, asset, s.sink.clone())
    };
    if let Some(sink) = sink {
        let container = asset.container_name();
        if let Err(e) = sink.create_container(&container).await {
            panic!("FakeArm: creating the container of asset '{name}' in the output sink: {e}");
        }
    }
    let s = arm.state();
    let template = if status == StatusCode::CREATED {
        &templates().asset_created
    } else {
        &templates().asset_updated
    };
    json_response(status, &asset_json(template, &asset, &s))
}

/// Transforms - CreateOrUpdate (`transforms-create.json`): the body's `properties` are
/// validated ([`fake_encoder::ams_validate_transform`]; 400 `BadRequest` naming the field) and
/// stored; 201 on create, 200 on update (`created` kept, `lastModified` now).
fn put_transform(arm: &FakeArm, target: &Target, body: &[u8]) -> Response {
    let name = target.transform.clone().unwrap_or_default();
    let Some(input) = parse_body(body) else {
        return invalid_body();
    };
    let properties = &input["properties"];
    if let Err(message) = fake_encoder::ams_validate_transform(properties) {
        return bad_request(&format!("Invalid transform '{name}': {message}."));
    }
    let mut s = arm.state();
    let now = OffsetDateTime::now_utc();
    let status = match s
        .transforms
        .iter_mut()
        .find(|t| t.name.eq_ignore_ascii_case(&name))
    {
        Some(existing) => {
            existing.properties = properties.clone();
            existing.last_modified = now;
            StatusCode::OK
        }
        None => {
            s.transforms.push(StoredTransform {
                name: name.clone(),
                properties: properties.clone(),
                created: now,
                last_modified: now,
            });
            StatusCode::CREATED
        }
    };
    let stored = s
        .transforms
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(&name))
        .expect("just stored");
    json_response(status, &transform_json(&s, stored))
}

fn find_job(s: &ArmState, transform: &str, job: &str) -> Option<usize> {
    s.jobs.iter().position(|j| {
        j.transform.eq_ignore_ascii_case(transform) && j.name.eq_ignore_ascii_case(job)
    })
}

fn resource_not_found(s: &ArmState, resource: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.Media/mediaservices/{}/{resource}' under resource group \
             '{}' was not found. For more details please go to \
             https://aka.ms/ARMResourceNotFoundFix",
            s.account, s.resource_group
        ),
    )
}

/// Jobs - Create (`jobs-create.json`). Errors: an unknown transform is 404 `ResourceNotFound`;
/// a body that is not a `JobInputAsset` → `JobOutputAsset`s job, one output per transform
/// output, is 400 `BadRequest`; an input or output asset that does not exist is 400
/// `BadRequest` naming it (AMS requires both to exist before the job is submitted). A PUT on an
/// existing job answers 200 with that job unchanged: AMS only lets `description` / `priority`
/// be updated and never starts a new run. A new job answers 201, `Queued`, its outputs `Queued`
/// at progress 0 with `label` `{presetName}_{index}` unless given, `correlationData` echoed,
/// and the input with the `files` / `inputDefinitions` defaults the example shows.
fn put_job(arm: &FakeArm, target: &Target, body: &[u8]) -> Response {
    let transform_name = target.transform.clone().unwrap_or_default();
    let job_name = target.job.clone().unwrap_or_default();
    let Some(input) = parse_body(body) else {
        return invalid_body();
    };
    let mut s = arm.state();
    let Some(transform) = s
        .transforms
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(&transform_name))
        .cloned()
    else {
        return resource_not_found(&s, &format!("transforms/{transform_name}"));
    };
    if let Some(i) = find_job(&s, &transform_name, &job_name) {
        return json_response(StatusCode::OK, &job_json(&s, &s.jobs[i]));
    }
    let request = match fake_encoder::parse_job_request(&input) {
        Ok(request) => request,
        Err(message) => return bad_request(&format!("Invalid job '{job_name}': {message}.")),
    };
    let presets: Vec<Value> = transform.properties["outputs"]
        .as_array()
        .map(|o| o.iter().map(|x| x["preset"].clone()).collect())
        .unwrap_or_default();
    if request.output_assets.len() != presets.len() {
        return bad_request(&format!(
            "The job has {} outputs but transform '{}' has {}: a job needs one JobOutput per \
             TransformOutput, in the same order.",
            request.output_assets.len(),
            transform.name,
            presets.len()
        ));
    }
    let exists = |name: &str| s.assets.iter().any(|a| a.name.eq_ignore_ascii_case(name));
    if !exists(&request.input_asset) {
        return bad_request(&format!(
            "The input asset '{}' was not found in account '{}'.",
            request.input_asset, s.account
        ));
    }
    for (asset, _) in &request.output_assets {
        if !exists(asset) {
            return bad_request(&format!(
                "The output asset '{asset}' was not found in account '{}': output assets must \
                 be created before the job is submitted.",
                s.account
            ));
        }
    }
    let mut job_input = request.input.clone();
    for key in ["files", "inputDefinitions"] {
        if job_input.get(key).is_none_or(Value::is_null) {
            job_input[key] = json!([]);
        }
    }
    let outputs = request
        .output_assets
        .iter()
        .zip(&presets)
        .enumerate()
        .map(|(i, ((asset, label), preset))| JobOutputSpec {
            asset_name: asset.clone(),
            label: label
                .clone()
                .unwrap_or_else(|| fake_encoder::default_output_label(preset, i)),
            preset: preset.clone(),
        })
        .collect();
    let outcome = s.next_outcome.take().unwrap_or(JobOutcome::Finish);
    let record = JobRecord {
        transform: transform.name.clone(),
        name: job_name,
        input: job_input,
        outputs,
        description: request.description,
        priority: request.priority,
        correlation_data: request.correlation_data,
        run: JobRun::new(s.job_steps, outcome),
    };
    let body = job_json(&s, &record);
    s.jobs.push(record);
    json_response(StatusCode::CREATED, &body)
}

/// Jobs - Get: 404 `ResourceNotFound` for an unknown job; otherwise one step of the run (see
/// [`fake_encoder::JobRun`]) and the job. The GET that reaches `Finished` writes the outputs
/// into the sink's Azurite before answering; a run without an input video ends in `Error`
/// (`ContentMalformed`, `Content`, `DoNotRetry`).
/// Jobs - Cancel Job (`jobs-cancel.json`): 200 with no body; an unknown job is 404
/// `ResourceNotFound`.
async fn cancel_job(arm: &FakeArm, target: &Target) -> Response {
    let transform_name = target.transform.clone().unwrap_or_default();
    let job_name = target.job.clone().unwrap_or_default();
    let _gate = arm.jobs_gate.lock().await;
    let mut s = arm.state();
    let Some(i) = find_job(&s, &transform_name, &job_name) else {
        return resource_not_found(&s, &format!("transforms/{transform_name}/jobs/{job_name}"));
    };
    s.jobs[i].run.cancel();
    axum::response::IntoResponse::into_response(StatusCode::OK)
}

async fn get_job(arm: &FakeArm, target: &Target) -> Response {
    let transform_name = target.transform.clone().unwrap_or_default();
    let job_name = target.job.clone().unwrap_or_default();
    let _gate = arm.jobs_gate.lock().await;
    let work = {
        let mut s = arm.state();
        let Some(i) = find_job(&s, &transform_name, &job_name) else {
            return resource_not_found(&s, &format!("transforms/{transform_name}/jobs/{job_name}"));
        };
        match s.jobs[i].run.advance() {
            Advance::Done => None,
            Advance::Final(outcome @ JobOutcome::Fail { .. }) => {
                s.jobs[i].run.fail(&outcome);
                None
            }
            Advance::Final(JobOutcome::Finish) => {
                let job = &s.jobs[i];
                let folder = |name: &str| {
                    s.assets
                        .iter()
                        .find(|a| a.name.eq_ignore_ascii_case(name))
                        .map(|a| (a.container_name(), None))
                };
                let work = fake_encoder::Encoding {
                    job: format!("{}/{}", job.transform, job.name),
                    input_asset: job.input_asset().to_owned(),
                    input: folder(job.input_asset()),
                    files: job.input_files(),
                    outputs: job
                        .outputs
                        .iter()
                        .map(|o| {
                            (
                                o.asset_name.clone(),
                                folder(&o.asset_name),
                                o.preset.clone(),
                            )
                        })
                        .collect(),
                };
                Some((work, s.sink.clone(), s.input_duration_secs))
            }
        }
    };
    if let Some((work, sink, duration)) = work {
        let Some(sink) = sink else {
            panic!(
                "FakeArm: job '{}' reached Finished but no output sink is set: call \
                 FakeArm::set_output_sink(OutputSink {{ blob_endpoint: azurite.blob_endpoint }}) \
                 so that finished jobs write their thumbnails into Azurite",
                work.job
            );
        };
        let result = work
            .run(&sink, |preset, video| {
                fake_encoder::ams_outputs(
                    preset,
                    &fake_encoder::video_basename(video, AMS_BASENAME_MAX),
                    duration,
                )
            })
            .await;
        let mut s = arm.state();
        if let Some(i) = find_job(&s, &transform_name, &job_name) {
            match result {
                Ok(()) => s.jobs[i].run.finish(),
                Err(outcome) => s.jobs[i].run.fail(&outcome),
            }
        }
    }
    let s = arm.state();
    match find_job(&s, &transform_name, &job_name) {
        Some(i) => json_response(StatusCode::OK, &job_json(&s, &s.jobs[i])),
        None => resource_not_found(&s, &format!("transforms/{transform_name}/jobs/{job_name}")),
    }
}

fn rfc3339(t: &OffsetDateTime) -> Value {
    json!(t.format(&Rfc3339).expect("RFC 3339"))
}

/// `systemData` of the examples with these times.
fn system_data(template: &Value, created: &OffsetDateTime, modified: &OffsetDateTime) -> Value {
    let mut data = template["systemData"].clone();
    data["createdAt"] = rfc3339(created);
    data["lastModifiedAt"] = rfc3339(modified);
    data
}

/// `transforms-create.json`'s answer for this transform: its `properties` as PUT, with the
/// outputs' defaults (`onError` `StopProcessingJob`, `relativePriority` `Normal`), `created`
/// and `lastModified`.
fn transform_json(s: &ArmState, transform: &StoredTransform) -> Value {
    let template = &templates().transform;
    let mut v = template.clone();
    v["name"] = json!(transform.name);
    v["id"] = json!(resource_id(
        template["id"]
            .as_str()
            .expect("example transform has an id"),
        s,
        &[("transforms", &transform.name)]
    ));
    let mut props = fake_encoder::transform_properties_with_defaults(&transform.properties);
    props["created"] = rfc3339(&transform.created);
    props["lastModified"] = rfc3339(&transform.last_modified);
    v["properties"] = props;
    v["systemData"] = system_data(template, &transform.created, &transform.last_modified);
    v
}

/// `jobs-create.json`'s answer shape for this job as it is now (`startTime` once processing,
/// `endTime` and `outputs[].error` when final).
fn job_json(s: &ArmState, job: &JobRecord) -> Value {
    let template = &templates().job;
    let mut v = template.clone();
    v["name"] = json!(job.name);
    v["id"] = json!(resource_id(
        template["id"].as_str().expect("example job has an id"),
        s,
        &[("transforms", &job.transform), ("jobs", &job.name)]
    ));
    v["properties"] = job.properties_json(true);
    v["systemData"] = system_data(template, &job.run.created, &job.run.last_modified);
    v
}

/// The example's resource id with our scope and these child names (after the segment named
/// like the key, case-insensitively).
fn resource_id(example_id: &str, s: &ArmState, names: &[(&str, &str)]) -> String {
    let mut segments: Vec<String> = example_id.split('/').map(str::to_owned).collect();
    for i in 1..segments.len() {
        let key = segments[i - 1].to_ascii_lowercase();
        let replacement = match key.as_str() {
            "subscriptions" => s.subscription_id.as_str(),
            "resourcegroups" => s.resource_group.as_str(),
            "mediaservices" => s.account.as_str(),
            _ => match names.iter().find(|(k, _)| *k == key) {
                Some((_, name)) => name,
                None => continue,
            },
        };
        segments[i] = replacement.to_owned();
    }
    segments.join("/")
}

// ---- $filter (parsing in super::odata) ----

/// Whether the asset passes the filter (names compared as this service does).
fn filter_matches(filter: &Filter, asset: &FakeAsset) -> bool {
    match filter {
        Filter::Name(n) => asset.name.eq_ignore_ascii_case(n),
        Filter::AlternateId(id) => asset.alternate_id.as_deref() == Some(id.as_str()),
        Filter::AssetId(id) => asset.asset_id == *id,
    }
}

// ---- JSON built from the examples ----

/// Success bodies from `tests/fixtures/ams-examples`, loaded once per test process.
struct Templates {
    get: Value,
    list: Value,
    list_item: Value,
    sas: Value,
    /// `assets-create.json` `responses.201.body` / `responses.200.body`
    asset_created: Value,
    asset_updated: Value,
    /// `transforms-create.json` `responses.201.body`
    transform: Value,
    /// `jobs-create.json` `responses.201.body`
    job: Value,
    params: ExampleParams,
}

struct ExampleParams {
    subscription_id: String,
    resource_group: String,
    account: String,
}

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let get_example = load_example("assets-get-by-name.json");
        let list = example_body(
            "assets-list-all.json",
            &load_example("assets-list-all.json"),
        );
        let list_item = list["value"]
            .get(0)
            .cloned()
            .expect("assets-list-all.json has at least one asset");
        let param = |name: &str| {
            get_example["parameters"][name]
                .as_str()
                .unwrap_or_else(|| panic!("assets-get-by-name.json parameters.{name}"))
                .to_owned()
        };
        Templates {
            params: ExampleParams {
                subscription_id: param("subscriptionId"),
                resource_group: param("resourceGroupName"),
                account: param("accountName"),
            },
            get: example_body("assets-get-by-name.json", &get_example),
            list,
            list_item,
            sas: example_body(
                "assets-list-sas-urls.json",
                &load_example("assets-list-sas-urls.json"),
            ),
            asset_created: response_body("assets-create.json", "201"),
            asset_updated: response_body("assets-create.json", "200"),
            transform: response_body("transforms-create.json", "201"),
            job: response_body("jobs-create.json", "201"),
        }
    })
}

/// `tests/fixtures/ams-examples`: verbatim copies of the official AMS swagger examples (see its
/// README for their sources), kept in the repository so that the tests need nothing beside it.
pub fn ams_examples_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ams-examples");
    assert!(
        dir.is_dir(),
        "the fake ARM builds its responses from the AMS swagger examples, expected in {}",
        dir.display()
    );
    dir
}

/// One example file, parsed.
pub fn load_example(file: &str) -> Value {
    let path = ams_examples_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading AMS example {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("AMS example {} is not JSON: {e}", path.display()))
}

/// `responses.{status}.body` of an example file.
fn response_body(file: &str, status: &str) -> Value {
    let body = &load_example(file)["responses"][status]["body"];
    assert!(
        body.is_object(),
        "{file} has no responses.{status}.body object"
    );
    body.clone()
}

fn example_body(file: &str, example: &Value) -> Value {
    let body = &example["responses"]["200"]["body"];
    assert!(body.is_object(), "{file} has no responses.200.body object");
    body.clone()
}

/// Properties the examples carry that the fake knows how to fill; anything else in a template
/// is dropped rather than leaked from the example.
const ASSET_PROPERTIES: &[&str] = &[
    "assetId",
    "created",
    "lastModified",
    "alternateId",
    "description",
    "container",
    "storageAccountName",
    "storageEncryptionFormat",
];

/// An example asset with this asset's fields substituted.
fn asset_json(template: &Value, asset: &FakeAsset, s: &ArmState) -> Value {
    let mut v = template.clone();
    v["name"] = json!(asset.name);
    // The example's literal segments (notably the lower-case `mediaservices` ARM returns) are
    // kept as they are.
    v["id"] = json!(resource_id(
        template["id"].as_str().expect("example asset has an id"),
        s,
        &[("assets", &asset.name)]
    ));
    let props = v["properties"]
        .as_object_mut()
        .expect("example asset has properties");
    props.retain(|k, _| ASSET_PROPERTIES.contains(&k.as_str()));
    let time = |t: &OffsetDateTime| json!(t.format(&Rfc3339).expect("RFC 3339"));
    props.insert("assetId".into(), json!(asset.asset_id));
    props.insert("created".into(), time(&asset.created));
    props.insert("lastModified".into(), time(&asset.last_modified));
    props.insert("container".into(), json!(asset.container_name()));
    props.insert(
        "storageEncryptionFormat".into(),
        json!(asset.storage_encryption_format),
    );
    set_or_remove(props, "alternateId", asset.alternate_id.as_deref());
    set_or_remove(props, "description", asset.description.as_deref());
    set_or_remove(
        props,
        "storageAccountName",
        asset.storage_account_name.as_deref(),
    );
    v
}

fn set_or_remove(props: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    match value {
        Some(value) => {
            props.insert(key.into(), json!(value));
        }
        None => {
            props.remove(key);
        }
    }
}

// ---- responses ----

/// ARM's error envelope (`ErrorResponse` in common-types), with the request id header ARM sends.
fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

/// ARM's 429 for [`RestFault::TooManyRequests`].
fn arm_throttled(retry_after_secs: Option<u64>) -> Response {
    let again = retry_after_secs
        .map(|secs| format!(" Please try again after '{secs}' seconds."))
        .unwrap_or_default();
    arm_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        &format!("The request was throttled (fault injected).{again}"),
    )
}

fn unauthorized(code: &str, message: &str) -> Response {
    let mut response = arm_error(StatusCode::UNAUTHORIZED, code, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", \
             error_description=\"The authentication failed.\"",
        ),
    );
    response
}

/// Percent-encode all but unreserved characters in a path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Query values: like a path segment, but `/`, `:` and `'` may stay (as in ARM's links).
const QUERY_VALUE: &AsciiSet = &PATH_SEGMENT.remove(b'/').remove(b':').remove(b'\'');
