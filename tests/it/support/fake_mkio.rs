//! A fake MediaKind MK.IO Media API (`https://app.mk.io`) serving the three calls the `mkio`
//! catalog makes, for one project:
//!
//! - `GET /api/v1/projects/{project}/media/assets/{name}` (Get Asset)
//! - `GET /api/v1/projects/{project}/media/assets[?$filter][&$top][&$skiptoken]` (List Assets,
//!   paged with `@odata.nextLink`: absolute, root-relative or query-only, as chosen)
//! - `GET /api/v1/projects/{project}/media/storage/{name}` (Get Storage)
//! - `PUT /api/v1/projects/{project}/media/assets/{name}` (Create or Update Asset:
//!   `AssetPutSchema`, 201 then 200; `properties.storageAccountName` required)
//! - `PUT /api/v1/projects/{project}/media/transforms/{t}` (`TransformPutSchema` with a
//!   `#MediaKind.ThumbnailGeneratorPreset`, 201 then 200, see
//!   [`super::fake_encoder::mkio_validate_transform`])
//! - `PUT|GET /api/v1/projects/{project}/media/transforms/{t}/jobs/{j}` (`JobPutSchema` /
//!   `JobSchema`; the state machine, the file names and what a finished job writes into Azurite
//!   are in [`super::fake_encoder`])
//!
//! Every body is built from the MediaKind documentation payloads in
//! `tests/fixtures/mkio-examples/` (loaded at run time, fields substituted), so the fake cannot
//! drift from them silently:
//! - asset: `docs-asset-put-request.json` (`properties` + `labels`) plus the read-only fields of
//!   the openapi excerpt's `AssetSchema`/`AssetProperties` (`name`, `type`, `systemData`,
//!   `assetId`, `created`, `lastModified`);
//! - list: `docs-list-assets-response-trimmed.json` (`value`, `supplemental.pagination`,
//!   `@odata.nextLink`, present, as the openapi says, whenever a page is full);
//! - storage: `{"metadata": {"name"}, "spec": …}` with `spec` from
//!   `docs-storage-put-azure-request.json` plus `AzureStorageSpecRead`'s read-only fields
//!   (`region`, `credential.signedStart`/`signedExpiry`). The `metadata` wrapper is an assumption
//!   (the excerpt has no storage read schema); the catalog reads `spec` only;
//! - errors: `docs-error-response.json` / `docs-error-response-429.json`
//!   (`{"error":{"code","detail","extraDetail"},"status","ref"}`).
//!
//! Like MK.IO, the fake checks the bearer token (a configurable expected value; 401 otherwise)
//! and the project (404 for another), counts every hit per operation, and serves faults queued
//! per operation.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::fake_encoder::{
    self, Advance, DEFAULT_INPUT_DURATION_SECS, DEFAULT_JOB_STEPS, JobOutcome, JobOutputSpec,
    JobRecord, JobRun, OutputSink, WriteRefusal,
};
use super::fake_entra::json_response;
use super::faults::{self, FaultQueue, RestFault};
use super::odata::{Filter, decode_skiptoken, encode_skiptoken, parse_filter};
use super::tls::{self, TestPki};

/// The project the fake holds unless told otherwise.
pub const DEFAULT_PROJECT: &str = "thumbs-test";
/// The token the fake expects unless told otherwise (obviously fake, to search logs for).
pub const DEFAULT_TOKEN: &str = "fake-mkio-token-7e57~do-not-log";
/// The `sig` of the storage instances' SAS tokens in Get Storage answers: it must never reach
/// a location, an error or a log.
pub const STORAGE_SAS_SIG: &str = "fake-mkio-storage-sig-7e57";
/// Assets per List Assets page unless told otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The storage type the service can serve.
pub const AZURE_STORAGE: &str = "Microsoft.Storage";

/// An MK.IO asset the fake knows. Build with [`FakeMkioAsset::new`] and the setters.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeMkioAsset {
    pub name: String,
    pub asset_id: Uuid,
    pub alternate_id: Option<String>,
    pub description: Option<String>,
    /// `None` -> `asset-{assetId}`.
    pub container: Option<String>,
    /// `None` -> the property is left out (the asset is at the container's root).
    pub sub_path: Option<String>,
    /// The MK.IO storage instance (`properties.storageAccountName`); `None` -> left out.
    pub storage: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created: OffsetDateTime,
}

impl FakeMkioAsset {
    /// An asset in the docs' storage instance (`primary-azure`), default container, created now.
    pub fn new(name: impl Into<String>, asset_id: Uuid) -> Self {
        Self {
            name: name.into(),
            asset_id,
            alternate_id: None,
            description: None,
            container: None,
            sub_path: None,
            storage: Some(templates().default_storage.clone()),
            labels: BTreeMap::new(),
            created: OffsetDateTime::now_utc(),
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

    pub fn sub_path(mut self, sub_path: impl Into<String>) -> Self {
        self.sub_path = Some(sub_path.into());
        self
    }

    /// The storage instance; `None` leaves `storageAccountName` out.
    pub fn storage(mut self, storage: Option<&str>) -> Self {
        self.storage = storage.map(str::to_owned);
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn container_name(&self) -> String {
        self.container
            .clone()
            .unwrap_or_else(|| format!("asset-{}", self.asset_id))
    }
}

/// An MK.IO storage instance (a registered Azure account, or another cloud's bucket).
#[derive(Clone, Debug, PartialEq)]
pub struct FakeStorage {
    pub name: String,
    /// `spec.type`: `Microsoft.Storage`, `AWS.S3` or `Google.Storage`.
    pub kind: String,
    /// `spec.url` (Azure only).
    pub url: String,
    pub description: Option<String>,
}

impl FakeStorage {
    /// An Azure storage instance with this `spec.url`.
    pub fn azure(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: AZURE_STORAGE.into(),
            url: url.into(),
            description: None,
        }
    }

    /// A storage instance of another type (`AWS.S3`, `Google.Storage`): a bucket, no URL.
    pub fn other(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            url: String::new(),
            description: None,
        }
    }
}

/// The operations the fake serves; counters and fault queues are kept per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MkioOp {
    GetAsset,
    ListAssets,
    GetStorage,
    /// `PUT …/media/transforms/{t}`
    PutTransform,
    /// `PUT …/media/assets/{name}`
    PutAsset,
    /// `PUT …/media/transforms/{t}/jobs/{j}`
    PutJob,
    /// `GET …/media/transforms/{t}/jobs/{j}`
    GetJob,
    /// `POST …/media/transforms/{t}/jobs/{j}/cancelJob`
    CancelJob,
}

impl MkioOp {
    fn is_write(self) -> bool {
        matches!(
            self,
            MkioOp::PutTransform | MkioOp::PutAsset | MkioOp::PutJob | MkioOp::CancelJob
        )
    }
}

/// How `@odata.nextLink` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextLinkForm {
    /// `https://127.0.0.1:1234/api/v1/projects/p/media/assets?...`
    Absolute,
    /// `/api/v1/projects/p/media/assets?...`
    Relative,
    /// `?$filter=...&$skiptoken=...`
    QueryOnly,
}

/// The fake MK.IO. Cheap to clone: clones share state.
#[derive(Clone)]
pub struct FakeMkio {
    state: Arc<Mutex<MkioState>>,
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

struct MkioState {
    base_url: Option<String>,
    project: String,
    token: String,
    forbidden: bool,
    assets: Vec<FakeMkioAsset>,
    storages: Vec<FakeStorage>,
    page_size: usize,
    next_link_form: NextLinkForm,
    filter_after_paging: bool,
    faults: FaultQueue<MkioOp, RestFault>,
    hits: HashMap<MkioOp, usize>,
    total_hits: usize,
    filters: Vec<String>,
    last_authorization: Option<String>,
    transforms: Vec<StoredTransform>,
    jobs: Vec<JobRecord>,
    sink: Option<OutputSink>,
    write_refusal: Option<WriteRefusal>,
    next_outcome: Option<JobOutcome>,
    job_steps: usize,
    input_duration_secs: u64,
}

impl Default for FakeMkio {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeMkio {
    /// Project [`DEFAULT_PROJECT`], token [`DEFAULT_TOKEN`], the docs' storage instance
    /// (`primary-azure`, `https://mystorageaccount.blob.core.windows.net`), no assets, pages of
    /// [`DEFAULT_PAGE_SIZE`], absolute nextLinks.
    pub fn new() -> Self {
        let t = templates();
        Self {
            state: Arc::new(Mutex::new(MkioState {
                base_url: None,
                project: DEFAULT_PROJECT.into(),
                token: DEFAULT_TOKEN.into(),
                forbidden: false,
                assets: Vec::new(),
                storages: vec![FakeStorage::azure(
                    &t.default_storage,
                    &t.default_storage_url,
                )],
                page_size: DEFAULT_PAGE_SIZE,
                next_link_form: NextLinkForm::Absolute,
                filter_after_paging: false,
                faults: FaultQueue::default(),
                hits: HashMap::new(),
                total_hits: 0,
                filters: Vec::new(),
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
    /// base of absolute nextLinks).
    pub async fn serve_https(self, pki: &TestPki) -> Self {
        let addr = tls::serve_https(self.router(), pki).await;
        self.set_base_url(format!("https://{addr}"));
        self
    }

    /// The routes, to serve any way a test likes (then call [`FakeMkio::set_base_url`]).
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, MkioState> {
        // A panicking test must not poison the fake for the other assertions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- configuration ----

    /// Assets per List Assets page (a `$top` below it wins).
    pub fn with_page_size(self, page_size: usize) -> Self {
        assert!(page_size > 0, "page size must be positive");
        self.state().page_size = page_size;
        self
    }

    pub fn with_next_link_form(self, form: NextLinkForm) -> Self {
        self.state().next_link_form = form;
        self
    }

    /// Page over all assets first, then filter each page: pages may come back empty with a
    /// nextLink, and a match may be on any page (as some OData servers do).
    pub fn with_filter_after_paging(self, on: bool) -> Self {
        self.state().filter_after_paging = on;
        self
    }

    /// Where the fake is reachable, e.g. `https://127.0.0.1:1234`.
    pub fn set_base_url(&self, base_url: impl Into<String>) {
        self.state().base_url = Some(base_url.into().trim_end_matches('/').to_owned());
    }

    /// Adds (or replaces, by name) an asset.
    pub fn add_asset(&self, asset: FakeMkioAsset) {
        insert_asset(&mut self.state(), asset);
    }

    /// Adds (or replaces, by name) a storage instance.
    pub fn add_storage(&self, storage: FakeStorage) {
        let mut s = self.state();
        s.storages.retain(|x| x.name != storage.name);
        s.storages.push(storage);
    }

    /// When set, requests with the right token get 403 (the token lacks the capability).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.state().forbidden = forbidden;
    }

    // ---- encoding ----

    /// Where finished jobs write their outputs (and where PUT asset creates containers).
    /// Without one, a job reaching `Finished` panics with a clear message.
    pub fn set_output_sink(&self, sink: OutputSink) {
        self.state().sink = Some(sink);
    }

    /// While set, every PUT (transform, asset, job) answers this status with MK.IO's error
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

    /// The notional duration of every input video (default 60 s): the base of percentages.
    pub fn set_input_duration(&self, secs: u64) {
        assert!(secs > 0, "the input duration must be positive");
        self.state().input_duration_secs = secs;
    }

    /// The job as GET would answer it now, without advancing it.
    pub fn job(&self, transform: &str, job: &str) -> Option<Value> {
        let s = self.state();
        find_job(&s, transform, job).map(|i| job_json(&s.jobs[i]))
    }

    /// The stored transform's `properties`, as the last PUT sent them.
    pub fn transform(&self, name: &str) -> Option<Value> {
        self.state()
            .transforms
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.properties.clone())
    }

    /// An asset, whether added by the test or created by PUT.
    pub fn asset(&self, name: &str) -> Option<FakeMkioAsset> {
        self.state()
            .assets
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// `{media_url}/transforms/{name}`
    pub fn transform_url(&self, name: &str) -> String {
        format!(
            "{}/transforms/{}",
            self.media_url(),
            utf8_percent_encode(name, PATH_SEGMENT)
        )
    }

    /// `{media_url}/transforms/{transform}/jobs/{job}`
    pub fn job_url(&self, transform: &str, job: &str) -> String {
        format!(
            "{}/jobs/{}",
            self.transform_url(transform),
            utf8_percent_encode(job, PATH_SEGMENT)
        )
    }

    // ---- faults ----

    /// Queues a fault for the next request of `op` (taken before the token check).
    pub fn push_fault(&self, op: MkioOp, fault: RestFault) {
        self.push_faults(op, fault, 1);
    }

    /// Queues the same fault for the next `times` requests of `op`.
    pub fn push_faults(&self, op: MkioOp, fault: RestFault, times: usize) {
        assert!(
            op == MkioOp::ListAssets || fault != RestFault::NextLinkLoop,
            "NextLinkLoop only applies to MkioOp::ListAssets"
        );
        self.state().faults.push_n(op, fault, times);
    }

    /// Faults still queued for `op`.
    pub fn pending_faults(&self, op: MkioOp) -> usize {
        self.state().faults.pending(&op)
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    // ---- what tests read ----

    /// Base URL, e.g. `https://127.0.0.1:1234`; panics if the fake was never served.
    pub fn base_url(&self) -> String {
        self.state()
            .base_url
            .clone()
            .expect("FakeMkio is not served yet: use serve_https/start_https or set_base_url")
    }

    pub fn project(&self) -> String {
        self.state().project.clone()
    }

    pub fn token(&self) -> String {
        self.state().token.clone()
    }

    /// `{base}/api/v1/projects/{project}/media`
    pub fn media_url(&self) -> String {
        format!(
            "{}/api/v1/projects/{}/media",
            self.base_url(),
            utf8_percent_encode(&self.project(), PATH_SEGMENT)
        )
    }

    pub fn asset_url(&self, name: &str) -> String {
        format!(
            "{}/assets/{}",
            self.media_url(),
            utf8_percent_encode(name, PATH_SEGMENT)
        )
    }

    pub fn assets_url(&self) -> String {
        format!("{}/assets", self.media_url())
    }

    pub fn storage_url(&self, name: &str) -> String {
        format!(
            "{}/storage/{}",
            self.media_url(),
            utf8_percent_encode(name, PATH_SEGMENT)
        )
    }

    /// Requests routed to `op` (all outcomes: faults, 4xx and 200 alike).
    pub fn hits(&self, op: MkioOp) -> usize {
        self.state().hits.get(&op).copied().unwrap_or(0)
    }

    /// Every request the fake received, unknown routes included.
    pub fn total_hits(&self) -> usize {
        self.state().total_hits
    }

    /// Every `$filter` List Assets received, decoded, in order.
    pub fn filters(&self) -> Vec<String> {
        self.state().filters.clone()
    }

    /// The last raw `Authorization` header, if any.
    pub fn last_authorization(&self) -> Option<String> {
        self.state().last_authorization.clone()
    }

    pub fn reset_counters(&self) {
        let mut s = self.state();
        s.hits.clear();
        s.total_hits = 0;
        s.filters.clear();
    }
}

// ---- request handling ----

struct Target {
    op: MkioOp,
    project: String,
    /// The asset, storage or transform.
    name: Option<String>,
    job: Option<String>,
}

/// `/api/v1/projects/{project}/media/` + GET `assets[/{name}]`, `storage/{name}`,
/// `transforms/{t}/jobs/{j}`; PUT `assets/{name}`, `transforms/{t}[/jobs/{j}]`.
fn route(method: &Method, path: &str) -> Option<Target> {
    let get = method == Method::GET;
    let post = method == Method::POST;
    if !get && !post && method != Method::PUT {
        return None;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let value = |i: usize| {
        percent_decode_str(segments[i])
            .decode_utf8_lossy()
            .into_owned()
    };
    let prefix_ok = segments.len() >= 6
        && segments[..3] == ["api", "v1", "projects"]
        && !segments[3].is_empty()
        && segments[4] == "media";
    if !prefix_ok {
        return None;
    }
    let named = |i: usize| segments.get(i).is_some_and(|s| !s.is_empty());
    let (op, job) = match (segments[5], segments.len(), get) {
        ("assets", 6, true) => (MkioOp::ListAssets, None),
        ("assets", 7, true) if named(6) => (MkioOp::GetAsset, None),
        ("assets", 7, false) if named(6) => (MkioOp::PutAsset, None),
        ("storage", 7, true) if named(6) => (MkioOp::GetStorage, None),
        ("transforms", 7, false) if named(6) => (MkioOp::PutTransform, None),
        _ if post => match (segments[5], segments.len()) {
            ("transforms", 10)
                if named(6) && segments[7] == "jobs" && named(8) && segments[9] == "cancelJob" =>
            {
                (MkioOp::CancelJob, Some(value(8)))
            }
            _ => return None,
        },
        ("transforms", 9, _) if named(6) && segments[7] == "jobs" && named(8) => {
            let op = if get { MkioOp::GetJob } else { MkioOp::PutJob };
            (op, Some(value(8)))
        }
        _ => return None,
    };
    Some(Target {
        op,
        project: value(3),
        name: (segments.len() > 6).then(|| value(6)),
        job,
    })
}

async fn handle(
    State(mkio): State<FakeMkio>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = route(&method, uri.path());
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();

    // Count and record first: every request that reached the fake is a hit, whatever follows.
    let fault = {
        let mut s = mkio.state();
        s.total_hits += 1;
        s.last_authorization = authorization.clone();
        let op = target.as_ref().map(|t| t.op);
        if let Some(op) = op {
            *s.hits.entry(op).or_default() += 1;
        }
        if op == Some(MkioOp::ListAssets)
            && let Some((_, filter)) = query.iter().find(|(k, _)| k == "$filter")
        {
            s.filters.push(filter.clone());
        }
        op.and_then(|op| s.faults.next(&op))
    };

    let Some(target) = target else {
        return mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("The fake MK.IO does not serve {method} {}.", uri.path()),
        );
    };

    let proceed = match faults::apply(fault, "MK.IO", mkio_error, mkio_throttled).await {
        Ok(proceed) => proceed,
        Err(answer) => return answer,
    };

    let name = target.name.clone().unwrap_or_default();
    let job = target.job.clone().unwrap_or_default();
    let response = match rejection(&mkio, &target, authorization.as_deref()) {
        Some(rejected) => rejected,
        None => match (target.op, write_refusal(&mkio, target.op)) {
            (_, Some(refused)) => refused,
            (MkioOp::GetAsset, None) => get_asset(&mkio, &name),
            (MkioOp::ListAssets, None) => {
                list_assets(&mkio, uri.path(), &query, proceed.next_link_loop)
            }
            (MkioOp::GetStorage, None) => get_storage(&mkio, &name),
            (MkioOp::PutAsset, None) => put_asset(&mkio, &name, &body).await,
            (MkioOp::PutTransform, None) => put_transform(&mkio, &name, &body),
            (MkioOp::PutJob, None) => put_job(&mkio, &name, &job, &body),
            (MkioOp::GetJob, None) => get_job(&mkio, &name, &job).await,
            (MkioOp::CancelJob, None) => cancel_job(&mkio, &name, &job).await,
        },
    };
    proceed.finish(response).await
}

/// Token, capability, project; `Some` = rejected.
fn rejection(mkio: &FakeMkio, target: &Target, authorization: Option<&str>) -> Option<Response> {
    let s = mkio.state();
    let Some(token) = authorization.and_then(bearer_token) else {
        return Some(mkio_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Missing or malformed Authorization header: expected 'Bearer <token>'.",
        ));
    };
    if token != s.token {
        return Some(mkio_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "The token is invalid or expired.",
        ));
    }
    if s.forbidden {
        let capability = match target.op {
            MkioOp::GetAsset | MkioOp::ListAssets => "ams.asset.get",
            MkioOp::GetStorage => "ams.storage.get",
            MkioOp::PutAsset => "ams.asset.create",
            MkioOp::PutTransform => "ams.transform.create",
            MkioOp::PutJob => "ams.job.create",
            MkioOp::GetJob => "ams.job.get",
            MkioOp::CancelJob => "ams.job.cancel",
        };
        return Some(mkio_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("The token lacks the capability `{capability}`."),
        ));
    }
    if target.project != s.project {
        return Some(mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Project '{}' not found.", target.project),
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

fn get_asset(mkio: &FakeMkio, name: &str) -> Response {
    let s = mkio.state();
    match s.assets.iter().find(|a| a.name.eq_ignore_ascii_case(name)) {
        Some(asset) => json_response(StatusCode::OK, &asset_json(asset)),
        None => mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Asset '{name}' not found."),
        ),
    }
}

fn get_storage(mkio: &FakeMkio, name: &str) -> Response {
    let s = mkio.state();
    match s.storages.iter().find(|x| x.name == name) {
        Some(storage) => json_response(StatusCode::OK, &storage_json(storage)),
        None => mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Storage '{name}' not found."),
        ),
    }
}

fn list_assets(
    mkio: &FakeMkio,
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
    for unsupported in ["$orderby", "$label", "$label_key"] {
        if param(unsupported).is_some() {
            return mkio_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("The fake MK.IO does not implement {unsupported}."),
            );
        }
    }
    let filter = match param("$filter")
        .map(|f| parse_filter(f, "fake MK.IO"))
        .transpose()
    {
        Ok(filter) => filter,
        Err(message) => return mkio_error(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let top = match param("$top").map(str::parse::<usize>).transpose() {
        Ok(top) => top,
        Err(_) => {
            return mkio_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "$top must be a non-negative integer.",
            );
        }
    };
    let (offset, looping) = match param("$skiptoken").map(decode_skiptoken).transpose() {
        Ok(token) => token.unwrap_or((0, false)),
        Err(message) => return mkio_error(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };

    let s = mkio.state();
    let page_size = top.unwrap_or(s.page_size).min(s.page_size).max(1);
    let matches = |a: &&FakeMkioAsset| filter.as_ref().is_none_or(|f| filter_matches(f, a));
    // Either filter, then page (MK.IO), or page the whole collection, then filter the page.
    let (scanned, total, items): (usize, usize, Vec<&FakeMkioAsset>) = if s.filter_after_paging {
        let page: Vec<&FakeMkioAsset> = s.assets.iter().skip(offset).take(page_size).collect();
        let scanned = page.len();
        (
            scanned,
            s.assets.len(),
            page.into_iter().filter(matches).collect(),
        )
    } else {
        let matched: Vec<&FakeMkioAsset> = s.assets.iter().filter(matches).collect();
        let page: Vec<&FakeMkioAsset> = matched
            .iter()
            .copied()
            .skip(offset)
            .take(page_size)
            .collect();
        (page.len(), matched.len(), page)
    };

    let mut body = templates().list.clone();
    body["value"] = Value::Array(items.iter().map(|a| asset_json(a)).collect());
    let supplemental = &mut body["supplemental"];
    supplemental["count"] = json!(items.len());
    supplemental["pagination"] = json!({
        "start": offset,
        "end": offset + scanned,
        "records": scanned,
        "total": total,
    });

    // As the openapi says: a nextLink "if the page length and number of items match".
    let next = if looping || start_loop {
        Some(encode_skiptoken(offset, true))
    } else if scanned == page_size {
        Some(encode_skiptoken(offset + scanned, false))
    } else {
        None
    };
    match next {
        Some(skiptoken) => {
            let mut link_query = String::new();
            for key in ["$filter", "$top"] {
                if let Some(value) = param(key) {
                    link_query.push_str(&format!(
                        "{key}={}&",
                        utf8_percent_encode(value, QUERY_VALUE)
                    ));
                }
            }
            link_query.push_str(&format!("$skiptoken={skiptoken}"));
            let link = match s.next_link_form {
                NextLinkForm::Absolute => {
                    let Some(base) = s.base_url.clone() else {
                        return mkio_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalServerError",
                            "FakeMkio needs set_base_url (or serve_https) for absolute nextLinks.",
                        );
                    };
                    format!("{base}{path}?{link_query}")
                }
                NextLinkForm::Relative => format!("{path}?{link_query}"),
                NextLinkForm::QueryOnly => format!("?{link_query}"),
            };
            body["@odata.nextLink"] = Value::String(link);
        }
        None => {
            body.as_object_mut()
                .expect("list body is an object")
                .remove("@odata.nextLink");
        }
    }
    json_response(StatusCode::OK, &body)
}

// ---- encoding: assets PUT, transforms, jobs ----

fn insert_asset(s: &mut MkioState, asset: FakeMkioAsset) {
    s.assets
        .retain(|a| !a.name.eq_ignore_ascii_case(&asset.name));
    s.assets.push(asset);
    s.assets.sort_by(|a, b| a.name.cmp(&b.name));
}

/// `Some` = every write is refused ([`FakeMkio::set_writes_refused`]).
fn write_refusal(mkio: &FakeMkio, op: MkioOp) -> Option<Response> {
    if !op.is_write() {
        return None;
    }
    let refusal = mkio.state().write_refusal.clone()?;
    let status = StatusCode::from_u16(refusal.status).expect("refusal status is a valid code");
    Some(mkio_error(status, &refusal.code, &refusal.message))
}

fn bad_request(detail: &str) -> Response {
    mkio_error(StatusCode::BAD_REQUEST, "BadRequest", detail)
}

/// The body as a JSON object, if it is one (else answer [`invalid_body`]).
fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn invalid_body() -> Response {
    bad_request("The request body is not a JSON object.")
}

/// `AssetProperties.container`'s pattern: 3-63 of `[a-z0-9-]`, no leading, trailing or double
/// `-`.
fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Create or Update Asset (`AssetPutSchema`). Create (201): `properties.storageAccountName` is
/// required and must name a storage instance of the project (400 otherwise), `container`
/// defaults to `asset-<assetId>`, `subPath` is optional (not empty, no leading `.` or `/`, no
/// trailing `/`). Update (200): as the openapi says, only `description` (and `labels`) change.
/// With an output sink, the container is created in Azurite ("already exists" is fine).
async fn put_asset(mkio: &FakeMkio, name: &str, body: &[u8]) -> Response {
    let Some(input) = parse_body(body) else {
        return invalid_body();
    };
    let props = &input["properties"];
    if !props.is_object() {
        return bad_request("properties is required and must be an object.");
    }
    let mut fields = HashMap::new();
    for key in [
        "storageAccountName",
        "container",
        "subPath",
        "description",
        "alternateId",
    ] {
        match props.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) => {
                fields.insert(key, v.clone());
            }
            Some(_) => return bad_request(&format!("properties.{key} must be a string.")),
        }
    }
    let mut labels = BTreeMap::new();
    match input.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return bad_request(&format!("labels.{k} must be a string."));
                };
                labels.insert(k.clone(), v.to_owned());
            }
        }
        Some(_) => return bad_request("labels must be an object."),
    }
    let (status, asset, sink) = {
        let mut s = mkio.state();
        let existing = s
            .assets
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .cloned();
        let (status, asset) = match existing {
            Some(mut asset) => {
                if let Some(v) = fields.get("description") {
                    asset.description = Some(v.clone());
                }
                if input.get("labels").is_some() {
                    asset.labels = labels;
                }
                (StatusCode::OK, asset)
            }
            None => {
                let Some(storage) = fields.get("storageAccountName") else {
                    return bad_request("properties.storageAccountName is required.");
                };
                if !s.storages.iter().any(|x| &x.name == storage) {
                    return bad_request(&format!(
                        "properties.storageAccountName: storage '{storage}' is not registered \
                         in project '{}'.",
                        s.project
                    ));
                }
                if let Some(container) = fields.get("container")
                    && !valid_container(container)
                {
                    return bad_request(&format!(
                        "properties.container '{container}' is not a valid container name."
                    ));
                }
                if let Some(sub) = fields.get("subPath")
                    && (sub.is_empty()
                        || sub.starts_with('.')
                        || sub.starts_with('/')
                        || sub.ends_with('/'))
                {
                    return bad_request(&format!(
                        "properties.subPath '{sub}' must be a directory path that does not start \
                         with '.' or '/' nor end with '/'."
                    ));
                }
                let mut asset = FakeMkioAsset::new(name, Uuid::new_v4()).storage(Some(storage));
                asset.container = fields.get("container").cloned();
                asset.sub_path = fields.get("subPath").cloned();
                asset.description = fields.get("description").cloned();
                asset.alternate_id = fields.get("alternateId").cloned();
                asset.labels = labels;
                (StatusCode::CREATED, asset)
            }
        };
        insert_asset(&mut s, asset.clone());
        (status, asset, s.sink.clone())
    };
    if let Some(sink) = sink {
        let container = asset.container_name();
        if let Err(e) = sink.create_container(&container).await {
            panic!("FakeMkio: creating the container of asset '{name}' in the output sink: {e}");
        }
    }
    json_response(status, &asset_json(&asset))
}

/// PUT transform (`TransformPutSchema`): the `properties` are validated
/// ([`fake_encoder::mkio_validate_transform`]; 400 naming the field) and stored; 201 on create,
/// 200 on update.
fn put_transform(mkio: &FakeMkio, name: &str, body: &[u8]) -> Response {
    let Some(input) = parse_body(body) else {
        return invalid_body();
    };
    let properties = &input["properties"];
    if let Err(message) = fake_encoder::mkio_validate_transform(properties) {
        return bad_request(&format!("Invalid transform '{name}': {message}."));
    }
    let mut s = mkio.state();
    let now = OffsetDateTime::now_utc();
    let status = match s.transforms.iter_mut().find(|t| t.name == name) {
        Some(existing) => {
            existing.properties = properties.clone();
            existing.last_modified = now;
            StatusCode::OK
        }
        None => {
            s.transforms.push(StoredTransform {
                name: name.to_owned(),
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
        .find(|t| t.name == name)
        .expect("just stored");
    json_response(status, &transform_json(stored))
}

fn find_job(s: &MkioState, transform: &str, job: &str) -> Option<usize> {
    s.jobs
        .iter()
        .position(|j| j.transform == transform && j.name == job)
}

/// PUT job (`JobPutSchema`). An unknown transform is 404 `NotFound`; a body that is not a
/// `JobInputAsset` → `JobOutputAsset`s job, one output per transform output, is 400; an input
/// or output asset that does not exist is 400 naming it (output assets must exist first, as in
/// AMS). A PUT on an existing job answers 200 with that job unchanged (no new run). A new job
/// answers 201, `Queued`, its outputs `Queued` at progress 0, `label`
/// `ThumbnailGeneratorPreset_{index}` unless given.
fn put_job(mkio: &FakeMkio, transform_name: &str, job_name: &str, body: &[u8]) -> Response {
    let Some(input) = parse_body(body) else {
        return invalid_body();
    };
    let mut s = mkio.state();
    let Some(transform) = s
        .transforms
        .iter()
        .find(|t| t.name == transform_name)
        .cloned()
    else {
        return mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Transform '{transform_name}' not found."),
        );
    };
    if let Some(i) = find_job(&s, transform_name, job_name) {
        return json_response(StatusCode::OK, &job_json(&s.jobs[i]));
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
            "The job has {} outputs but transform '{transform_name}' has {}.",
            request.output_assets.len(),
            presets.len()
        ));
    }
    let exists = |name: &str| s.assets.iter().any(|a| a.name.eq_ignore_ascii_case(name));
    if !exists(&request.input_asset) {
        return bad_request(&format!(
            "properties.input.assetName: asset '{}' not found.",
            request.input_asset
        ));
    }
    for (i, (asset, _)) in request.output_assets.iter().enumerate() {
        if !exists(asset) {
            return bad_request(&format!(
                "properties.outputs[{i}].assetName: asset '{asset}' not found (output assets \
                 must be created before the job)."
            ));
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
        name: job_name.to_owned(),
        input: request.input.clone(),
        outputs,
        description: request.description,
        priority: request.priority,
        correlation_data: request.correlation_data,
        run: JobRun::new(s.job_steps, outcome),
    };
    let body = job_json(&record);
    s.jobs.push(record);
    json_response(StatusCode::CREATED, &body)
}

/// GET job: 404 `NotFound` for an unknown job; otherwise one step of the run (see
/// [`fake_encoder::JobRun`]) and the job (`JobSchema`). The GET that reaches `Finished` writes
/// the outputs into the output asset's container, under its `subPath`, before answering; a run
/// without an input video (looked for under the input asset's `subPath`) ends in `Error`
/// (`ContentMalformed`, `Content`, `DoNotRetry`).
/// `cancelJob`: 200 with no body (as AMS); an unknown job is 404.
async fn cancel_job(mkio: &FakeMkio, transform_name: &str, job_name: &str) -> Response {
    let _gate = mkio.jobs_gate.lock().await;
    let mut s = mkio.state();
    let Some(i) = find_job(&s, transform_name, job_name) else {
        return mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Job '{job_name}' of transform '{transform_name}' not found."),
        );
    };
    s.jobs[i].run.cancel();
    axum::response::IntoResponse::into_response(StatusCode::OK)
}

async fn get_job(mkio: &FakeMkio, transform_name: &str, job_name: &str) -> Response {
    let not_found = || {
        mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Job '{job_name}' of transform '{transform_name}' not found."),
        )
    };
    let _gate = mkio.jobs_gate.lock().await;
    let work = {
        let mut s = mkio.state();
        let Some(i) = find_job(&s, transform_name, job_name) else {
            return not_found();
        };
        match s.jobs[i].run.advance() {
            Advance::Done => None,
            Advance::Final(outcome @ JobOutcome::Fail { .. }) => {
                s.jobs[i].run.fail(&outcome);
                None
            }
            Advance::Final(JobOutcome::Finish) => {
                let job = &s.jobs[i];
                let place = |name: &str| {
                    s.assets
                        .iter()
                        .find(|a| a.name.eq_ignore_ascii_case(name))
                        .map(|a| (a.container_name(), a.sub_path.clone()))
                };
                let work = fake_encoder::Encoding {
                    job: format!("{}/{}", job.transform, job.name),
                    input_asset: job.input_asset().to_owned(),
                    input: place(job.input_asset()),
                    files: job.input_files(),
                    outputs: job
                        .outputs
                        .iter()
                        .map(|o| (o.asset_name.clone(), place(&o.asset_name), o.preset.clone()))
                        .collect(),
                };
                Some((work, s.sink.clone(), s.input_duration_secs))
            }
        }
    };
    if let Some((work, sink, duration)) = work {
        let Some(sink) = sink else {
            panic!(
                "FakeMkio: job '{}' reached Finished but no output sink is set: call \
                 FakeMkio::set_output_sink(OutputSink {{ blob_endpoint: azurite.blob_endpoint }}) \
                 so that finished jobs write their thumbnails into Azurite",
                work.job
            );
        };
        let result = work
            .run(&sink, |preset, video| {
                fake_encoder::mkio_outputs(preset, video, duration)
            })
            .await;
        let mut s = mkio.state();
        if let Some(i) = find_job(&s, transform_name, job_name) {
            match result {
                Ok(()) => s.jobs[i].run.finish(),
                Err(outcome) => s.jobs[i].run.fail(&outcome),
            }
        }
    }
    let s = mkio.state();
    match find_job(&s, transform_name, job_name) {
        Some(i) => json_response(StatusCode::OK, &job_json(&s.jobs[i])),
        None => not_found(),
    }
}

/// `SystemDataSchema` with these times.
fn system_data(created: &OffsetDateTime, modified: &OffsetDateTime) -> Value {
    json!({
        "internalId": Uuid::new_v4(),
        "createdBy": "fake-mkio@example.com",
        "createdByType": "User",
        "createdAt": rfc3339(created),
        "lastModifiedBy": "fake-mkio@example.com",
        "lastModifiedByType": "User",
        "lastModifiedAt": rfc3339(modified),
    })
}

/// `TransformSchema`: `name`, `type`, `systemData`, and `properties` as PUT with
/// `TransformOutput`'s defaults (`relativePriority` `Normal`; `onError` `StopProcessingJob`,
/// which the excerpt leaves without a default, as AMS's) and `created` / `lastModified`. No
/// `id`: no MK.IO example shows one (as for assets).
fn transform_json(transform: &StoredTransform) -> Value {
    let mut props = fake_encoder::transform_properties_with_defaults(&transform.properties);
    props["created"] = rfc3339(&transform.created);
    props["lastModified"] = rfc3339(&transform.last_modified);
    json!({
        "name": transform.name,
        "type": "Microsoft.Media/mediaservices/transforms",
        "properties": props,
        "systemData": system_data(&transform.created, &transform.last_modified),
    })
}

/// `JobSchema` as the job is now (`startTime` once processing, `endTime` and
/// `outputs[].error` when final).
fn job_json(job: &JobRecord) -> Value {
    json!({
        "name": job.name,
        "type": "Microsoft.Media/mediaservices/transforms/jobs",
        "properties": job.properties_json(false),
        "systemData": system_data(&job.run.created, &job.run.last_modified),
    })
}

// ---- $filter (parsing in super::odata) ----

/// Whether the asset passes the filter (names compared as this service does).
fn filter_matches(filter: &Filter, asset: &FakeMkioAsset) -> bool {
    match filter {
        Filter::Name(n) => asset.name == *n,
        Filter::AlternateId(id) => asset.alternate_id.as_deref() == Some(id.as_str()),
        Filter::AssetId(id) => asset.asset_id == *id,
    }
}

// ---- JSON built from the docs payloads ----

struct Templates {
    /// `docs-asset-put-request.json`
    asset: Value,
    /// `docs-list-assets-response-trimmed.json`
    list: Value,
    /// `docs-storage-put-azure-request.json` `spec`
    storage_spec: Value,
    /// `docs-error-response.json`
    error: Value,
    /// `docs-error-response-429.json`
    error_429: Value,
    /// The docs' storage instance name (the asset's `storageAccountName`).
    default_storage: String,
    /// The docs' storage `spec.url`.
    default_storage_url: String,
}

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let asset = load_example("docs-asset-put-request.json");
        let storage = load_example("docs-storage-put-azure-request.json");
        let storage_spec = storage["spec"].clone();
        assert!(
            storage_spec.is_object(),
            "docs-storage-put-azure-request.json has a spec"
        );
        let list = load_example("docs-list-assets-response-trimmed.json");
        assert!(
            list["value"].is_array() && list["supplemental"]["pagination"].is_object(),
            "docs-list-assets-response-trimmed.json has value and supplemental.pagination"
        );
        Templates {
            default_storage: asset["properties"]["storageAccountName"]
                .as_str()
                .expect("docs-asset-put-request.json properties.storageAccountName")
                .to_owned(),
            default_storage_url: storage_spec["url"]
                .as_str()
                .expect("docs-storage-put-azure-request.json spec.url")
                .to_owned(),
            asset,
            list,
            storage_spec,
            error: load_example("docs-error-response.json"),
            error_429: load_example("docs-error-response-429.json"),
        }
    })
}

/// `tests/fixtures/mkio-examples`: MediaKind documentation payloads (see its README).
pub fn mkio_examples_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mkio-examples");
    assert!(
        dir.is_dir(),
        "the fake MK.IO builds its responses from the MK.IO docs payloads, expected in {}",
        dir.display()
    );
    dir
}

/// One payload file, parsed.
pub fn load_example(file: &str) -> Value {
    let path = mkio_examples_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading MK.IO example {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("MK.IO example {} is not JSON: {e}", path.display()))
}

fn rfc3339(t: &OffsetDateTime) -> Value {
    json!(t.format(&Rfc3339).expect("RFC 3339"))
}

/// The docs' asset with this asset's fields, plus the read-only ones of `AssetSchema`.
fn asset_json(asset: &FakeMkioAsset) -> Value {
    let mut v = templates().asset.clone();
    let props = v["properties"]
        .as_object_mut()
        .expect("docs asset has properties");
    let mut set = |key: &str, value: Option<Value>| match value {
        Some(value) => {
            props.insert(key.into(), value);
        }
        None => {
            props.remove(key);
        }
    };
    set("assetId", Some(json!(asset.asset_id)));
    set("alternateId", asset.alternate_id.as_ref().map(|x| json!(x)));
    set("description", asset.description.as_ref().map(|x| json!(x)));
    set("container", Some(json!(asset.container_name())));
    set("subPath", asset.sub_path.as_ref().map(|x| json!(x)));
    set(
        "storageAccountName",
        asset.storage.as_ref().map(|x| json!(x)),
    );
    set("created", Some(rfc3339(&asset.created)));
    set("lastModified", Some(rfc3339(&asset.created)));
    v["labels"] = json!(asset.labels);
    v["name"] = json!(asset.name);
    v["type"] = json!("Microsoft.Media/mediaservices/assets");
    v["systemData"] = json!({
        "internalId": asset.asset_id,
        "createdBy": "fake-mkio@example.com",
        "createdByType": "User",
        "createdAt": rfc3339(&asset.created),
        "lastModifiedBy": "fake-mkio@example.com",
        "lastModifiedByType": "User",
        "lastModifiedAt": rfc3339(&asset.created),
    });
    v
}

/// `{"metadata": {"name"}, "spec": …}`: the docs' Azure spec with this instance's fields and
/// `AzureStorageSpecRead`'s read-only ones; the SAS signature replaced by [`STORAGE_SAS_SIG`].
fn storage_json(storage: &FakeStorage) -> Value {
    let mut spec = templates().storage_spec.clone();
    spec["type"] = json!(storage.kind);
    if let Some(description) = &storage.description {
        spec["description"] = json!(description);
    }
    spec["region"] = Value::Null;
    if storage.kind == AZURE_STORAGE {
        spec["url"] = json!(storage.url);
        let sas = spec["credential"]["sasToken"]
            .as_str()
            .expect("docs storage has credential.sasToken")
            .to_owned();
        let param = |key: &str| {
            url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let rebuilt: Vec<String> = sas
            .trim_start_matches('?')
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some(("sig", _)) => format!("sig={STORAGE_SAS_SIG}"),
                _ => kv.to_owned(),
            })
            .collect();
        spec["credential"] = json!({
            "sasToken": format!("?{}", rebuilt.join("&")),
            "signedStart": param("st"),
            "signedExpiry": param("se"),
        });
    } else {
        let map = spec.as_object_mut().expect("spec is an object");
        map.remove("url");
        map.remove("credential");
        map.insert("bucketName".into(), json!(storage.name));
    }
    json!({ "metadata": { "name": storage.name }, "spec": spec })
}

/// The docs' error body with this code and detail, a fresh `ref`, and the status.
fn mkio_error(status: StatusCode, code: &str, detail: &str) -> Response {
    let mut body = templates().error.clone();
    body["error"]["code"] = json!(code);
    body["error"]["detail"] = json!(detail);
    body["status"] = json!(status.as_u16());
    body["ref"] = json!(Uuid::new_v4().to_string());
    json_response(status, &body)
}

/// The docs' 429 for [`RestFault::TooManyRequests`].
fn mkio_throttled(_retry_after_secs: Option<u64>) -> Response {
    let mut body = templates().error_429.clone();
    body["error"]["code"] = json!("TooManyRequests");
    body["error"]["detail"] = json!("Rate limit exceeded (fault injected).");
    body["ref"] = json!(Uuid::new_v4().to_string());
    json_response(StatusCode::TOO_MANY_REQUESTS, &body)
}

/// Percent-encode all but unreserved characters in a path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Query values in nextLinks: like a path segment, but `/` and `'` may stay.
const QUERY_VALUE: &AsciiSet = &PATH_SEGMENT.remove(b'/').remove(b'\'');
