//! A fake MediaKind MK.IO Media API (`https://app.mk.io`) serving the three calls the `mkio`
//! catalog makes, for one project:
//!
//! - `GET /api/v1/projects/{project}/media/assets/{name}` (Get Asset)
//! - `GET /api/v1/projects/{project}/media/assets[?$filter][&$top][&$skiptoken]` (List Assets,
//!   paged with `@odata.nextLink`: absolute, root-relative or query-only, as chosen)
//! - `GET /api/v1/projects/{project}/media/storage/{name}` (Get Storage)
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::fake_entra::{json_response, json_text_response};
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
}

/// A fault for the next request of one operation, consumed in order (before the token check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MkioFault {
    /// This status with an MK.IO error body.
    Status(u16),
    /// 429 with the docs' 429 body, and `Retry-After: {secs}` when given.
    TooManyRequests { retry_after: Option<u64> },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without an answer.
    DropConnection,
    /// A 200 whose JSON is cut in half (other statuses are left alone).
    MalformedJson,
    /// (List Assets only) An `@odata.nextLink` that leads back to the same page, forever.
    NextLinkLoop,
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
    faults: HashMap<MkioOp, VecDeque<MkioFault>>,
    hits: HashMap<MkioOp, usize>,
    total_hits: usize,
    filters: Vec<String>,
    last_authorization: Option<String>,
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
                faults: HashMap::new(),
                hits: HashMap::new(),
                total_hits: 0,
                filters: Vec::new(),
                last_authorization: None,
            })),
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

    pub fn with_project(self, project: impl Into<String>) -> Self {
        self.state().project = project.into();
        self
    }

    /// The bearer token requests must carry.
    pub fn with_token(self, token: impl Into<String>) -> Self {
        self.set_token(token);
        self
    }

    pub fn set_token(&self, token: impl Into<String>) {
        self.state().token = token.into();
    }

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
        let mut s = self.state();
        s.assets
            .retain(|a| !a.name.eq_ignore_ascii_case(&asset.name));
        s.assets.push(asset);
        s.assets.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn remove_asset(&self, name: &str) {
        self.state()
            .assets
            .retain(|a| !a.name.eq_ignore_ascii_case(name));
    }

    /// Adds (or replaces, by name) a storage instance.
    pub fn add_storage(&self, storage: FakeStorage) {
        let mut s = self.state();
        s.storages.retain(|x| x.name != storage.name);
        s.storages.push(storage);
    }

    pub fn remove_storage(&self, name: &str) {
        self.state().storages.retain(|x| x.name != name);
    }

    /// When set, requests with the right token get 403 (the token lacks the capability).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.state().forbidden = forbidden;
    }

    // ---- faults ----

    pub fn push_fault(&self, op: MkioOp, fault: MkioFault) {
        self.push_faults(op, fault, 1);
    }

    pub fn push_faults(&self, op: MkioOp, fault: MkioFault, times: usize) {
        assert!(
            op == MkioOp::ListAssets || fault != MkioFault::NextLinkLoop,
            "NextLinkLoop only applies to MkioOp::ListAssets"
        );
        self.state()
            .faults
            .entry(op)
            .or_default()
            .extend(std::iter::repeat_n(fault, times));
    }

    pub fn pending_faults(&self, op: MkioOp) -> usize {
        self.state().faults.get(&op).map_or(0, VecDeque::len)
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
    name: Option<String>,
}

/// `/api/v1/projects/{project}/media/{assets[/{name}] | storage/{name}}`, GET only.
fn route(method: &Method, path: &str) -> Option<Target> {
    if method != Method::GET {
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
    let (op, name) = match (segments[5], segments.len()) {
        ("assets", 6) => (MkioOp::ListAssets, None),
        ("assets", 7) if !segments[6].is_empty() => (MkioOp::GetAsset, Some(value(6))),
        ("storage", 7) if !segments[6].is_empty() => (MkioOp::GetStorage, Some(value(6))),
        _ => return None,
    };
    Some(Target {
        op,
        project: value(3),
        name,
    })
}

async fn handle(
    State(mkio): State<FakeMkio>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
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
        op.and_then(|op| s.faults.get_mut(&op).and_then(VecDeque::pop_front))
    };

    let Some(target) = target else {
        return mkio_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("The fake MK.IO does not serve {method} {}.", uri.path()),
        );
    };

    let mut next_link_loop = false;
    let mut malformed = false;
    match fault {
        None => {}
        Some(MkioFault::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("fault status is a valid code");
            let code_name: String = status
                .canonical_reason()
                .unwrap_or("Error")
                .split_whitespace()
                .collect();
            return mkio_error(
                status,
                &code_name,
                &format!("Fault injected by the fake MK.IO: {code}."),
            );
        }
        Some(MkioFault::TooManyRequests { retry_after }) => {
            let mut body = templates().error_429.clone();
            body["error"]["code"] = json!("TooManyRequests");
            body["error"]["detail"] = json!("Rate limit exceeded (fault injected).");
            body["ref"] = json!(Uuid::new_v4().to_string());
            let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
            if let Some(secs) = retry_after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&secs.to_string()).expect("digits"),
                );
            }
            return response;
        }
        Some(MkioFault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(MkioFault::DropConnection) => {
            // Unwinding out of the connection (HTTP/1.1) or stream (HTTP/2) task drops it
            // without an answer; `resume_unwind` skips the panic hook. No lock is held here.
            std::panic::resume_unwind(Box::new("FakeMkio: MkioFault::DropConnection"));
        }
        Some(MkioFault::MalformedJson) => malformed = true,
        Some(MkioFault::NextLinkLoop) => next_link_loop = true,
    }

    let response = match rejection(&mkio, &target, authorization.as_deref()) {
        Some(rejected) => rejected,
        None => match target.op {
            MkioOp::GetAsset => get_asset(&mkio, target.name.as_deref().unwrap_or_default()),
            MkioOp::ListAssets => list_assets(&mkio, uri.path(), &query, next_link_loop),
            MkioOp::GetStorage => get_storage(&mkio, target.name.as_deref().unwrap_or_default()),
        },
    };
    if malformed && response.status() == StatusCode::OK {
        return truncate_body(response).await;
    }
    response
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
    let filter = match param("$filter").map(parse_filter).transpose() {
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
    let matches = |a: &&FakeMkioAsset| filter.as_ref().is_none_or(|f| f.matches(a));
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

// ---- $filter / $skiptoken ----

/// The `$filter` forms the catalog uses (and the docs show for `name`).
#[derive(Debug, PartialEq)]
enum Filter {
    Name(String),
    AlternateId(String),
    AssetId(Uuid),
}

impl Filter {
    fn matches(&self, asset: &FakeMkioAsset) -> bool {
        match self {
            Filter::Name(n) => asset.name == *n,
            Filter::AlternateId(id) => asset.alternate_id.as_deref() == Some(id.as_str()),
            Filter::AssetId(id) => asset.asset_id == *id,
        }
    }
}

/// `name eq 'x'`, `properties/alternateId eq 'x'` (OData string, `''` escapes `'`),
/// `properties/assetId eq <guid>` (bare, `'quoted'` or `guid'...'`).
fn parse_filter(filter: &str) -> Result<Filter, String> {
    let unsupported = || {
        format!(
            "The $filter '{filter}' is not supported: the fake MK.IO knows `name eq '..'`, \
             `properties/alternateId eq '..'` and `properties/assetId eq <guid>`."
        )
    };
    let mut parts = filter.trim().splitn(3, char::is_whitespace);
    let (Some(property), Some("eq"), Some(literal)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unsupported());
    };
    let literal = literal.trim();
    let string_literal = || {
        literal
            .strip_prefix('\'')
            .and_then(|l| l.strip_suffix('\''))
            .filter(|inner| !inner.replace("''", "").contains('\''))
            .map(|inner| inner.replace("''", "'"))
            .ok_or_else(|| format!("Invalid OData string literal {literal} in $filter."))
    };
    match property {
        "name" => Ok(Filter::Name(string_literal()?)),
        "properties/alternateId" => Ok(Filter::AlternateId(string_literal()?)),
        "properties/assetId" => {
            let guid = literal.strip_prefix("guid").unwrap_or(literal);
            let guid = guid
                .strip_prefix('\'')
                .and_then(|g| g.strip_suffix('\''))
                .unwrap_or(guid);
            Uuid::parse_str(guid)
                .map(Filter::AssetId)
                .map_err(|_| format!("Invalid GUID {literal} in $filter."))
        }
        _ => Err(unsupported()),
    }
}

fn encode_skiptoken(offset: usize, looping: bool) -> String {
    let kind = if looping { "loop" } else { "next" };
    URL_SAFE_NO_PAD.encode(format!("{kind}:{offset}"))
}

fn decode_skiptoken(token: &str) -> Result<(usize, bool), String> {
    let invalid = || format!("Invalid $skiptoken '{token}'.");
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let (kind, offset) = text.split_once(':').ok_or_else(invalid)?;
    let offset = offset.parse().map_err(|_| invalid())?;
    match kind {
        "next" => Ok((offset, false)),
        "loop" => Ok((offset, true)),
        _ => Err(invalid()),
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

/// The same response with its body cut in half: valid headers, broken JSON.
async fn truncate_body(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("in-memory body");
    let text = String::from_utf8_lossy(&bytes);
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut broken = json_text_response(parts.status, text[..cut].to_owned());
    *broken.headers_mut() = parts.headers;
    broken.headers_mut().remove(header::CONTENT_LENGTH);
    broken
}

/// Percent-encode all but unreserved characters in a path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Query values in nextLinks: like a path segment, but `/` and `'` may stay.
const QUERY_VALUE: &AsciiSet = &PATH_SEGMENT.remove(b'/').remove(b'\'');
