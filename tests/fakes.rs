//! Proves the test fakes (tests/support/fake_entra.rs, tests/support/fake_arm.rs) behave like
//! the services they stand in for, so tests built on them test the service, not the fakes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_arm::{self, ArmFault, ArmOp, FakeArm, FakeAsset};
use support::fake_entra::{self, EntraFault, FakeEntra, TokenForm};
use support::tls;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const ARM: &str = "https://management.azure.com";
const STORAGE: &str = "https://storage.azure.com";

fn https_client() -> reqwest::Client {
    tls::client(tls::shared())
}

/// Serves a router over plain HTTP/1.1 with axum::serve (the fakes do not need TLS to work).
async fn serve_http(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn json_of(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn client_credentials(
    entra: &FakeEntra,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> reqwest::Response {
    https_client()
        .post(entra.token_url())
        .form(&[
            ("client_id", client_id),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token request")
}

async fn msi(
    entra: &FakeEntra,
    resource: &str,
    identity_header: Option<&str>,
) -> reqwest::Response {
    let mut request = https_client()
        .get(entra.msi_endpoint())
        .query(&[("api-version", "2019-08-01"), ("resource", resource)])
        .header("metadata", "true");
    if let Some(value) = identity_header {
        request = request.header("x-identity-header", value);
    }
    request.send().await.expect("msi request")
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

// ------------------------------------------------------------------------------------------
// Fake Entra ID
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn entra_client_credentials_issue_a_jwt_with_the_claims_azurite_and_arm_check() {
    let entra = FakeEntra::start_https(tls::shared()).await;
    let response = client_credentials(
        &entra,
        &entra.client_id(),
        &entra.client_secret(),
        "https://management.azure.com/.default",
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();

    // Header: HS256 JWT.
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));

    let claims = fake_entra::verify_jwt(token).expect("signed by the fake");
    let tenant = entra.tenant_id();
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["aud"], ARM);
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["oid"], entra.object_id());
    assert_eq!(claims["sub"], entra.object_id());
    assert_eq!(claims["appid"], entra.client_id());
    let (nbf, iat, exp) = (
        claims["nbf"].as_i64().unwrap(),
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    let t = now();
    assert!((t - 62..=t - 58).contains(&nbf), "nbf {nbf} vs now {t}");
    assert_eq!(iat, nbf);
    assert!((t + 3598..=t + 3601).contains(&exp), "exp {exp} vs now {t}");

    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 1);
    assert_eq!(entra.token_requests(TokenForm::ManagedIdentity), 0);
    assert_eq!(entra.access_tokens(), vec![token.to_owned()]);
    let issued = &entra.issued_tokens()[0];
    assert_eq!(issued.form, TokenForm::ClientCredentials);
    assert_eq!(issued.audience, ARM);
}

#[tokio::test]
async fn entra_normalizes_the_audience_and_rejects_scopes_without_default() {
    let entra = FakeEntra::start_https(tls::shared()).await;
    for (scope, aud) in [
        ("https://storage.azure.com/.default", STORAGE),
        ("https://management.azure.com//.default", ARM),
    ] {
        let response =
            client_credentials(&entra, &entra.client_id(), &entra.client_secret(), scope).await;
        let body = json_of(response).await;
        let claims = fake_entra::jwt_claims(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims["aud"], aud, "{scope}");
    }
    let response = client_credentials(
        &entra,
        &entra.client_id(),
        &entra.client_secret(),
        "https://management.azure.com/",
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error"], "invalid_scope");
}

#[tokio::test]
async fn entra_wrong_secret_is_401_invalid_client_and_issues_nothing() {
    let entra = FakeEntra::new()
        .with_client("11111111-2222-4333-8444-555555555555", "right")
        .serve_https(tls::shared())
        .await;
    let response = client_credentials(&entra, &entra.client_id(), "wrong", "x/.default").await;
    assert_eq!(response.status(), 401);
    let body = json_of(response).await;
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: ")
    );
    for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[key].is_string(), "{key} in {body}");
    }

    // Unknown client and unknown tenant are told apart too.
    let response = client_credentials(&entra, "someone-else", "right", "x/.default").await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error_codes"], json!([700016]));
    let response = https_client()
        .post(format!(
            "{}/other-tenant/oauth2/v2.0/token",
            entra.base_url()
        ))
        .form(&[("client_id", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error_codes"], json!([90002]));

    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 3);
    assert!(entra.issued_tokens().is_empty());
}

#[tokio::test]
async fn entra_managed_identity_app_service_form() {
    let entra = FakeEntra::new()
        .with_token_lifetime(Duration::from_secs(600))
        .serve_https(tls::shared())
        .await;
    let response = msi(
        &entra,
        "https://storage.azure.com/",
        Some(&entra.identity_header()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://storage.azure.com/");
    let expires_on: i64 = body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .expect("of unix seconds");
    assert!((now() + 598..=now() + 601).contains(&expires_on));
    let claims = fake_entra::verify_jwt(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], STORAGE);
    assert_eq!(claims["oid"], entra.managed_identity_object_id());
    assert_eq!(claims["appid"], entra.managed_identity_client_id());
    assert_eq!(claims["tid"], entra.tenant_id());

    let missing = msi(&entra, STORAGE, None).await;
    assert_eq!(missing.status(), 400);
    let wrong = msi(&entra, STORAGE, Some("nope")).await;
    assert_eq!(wrong.status(), 401);

    assert_eq!(entra.token_requests(TokenForm::ManagedIdentity), 3);
    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 0);
    assert_eq!(entra.issued_tokens().len(), 1);
    assert_eq!(entra.issued_tokens()[0].form, TokenForm::ManagedIdentity);
}

#[tokio::test]
async fn entra_faults_are_consumed_in_order() {
    let entra = FakeEntra::start_https(tls::shared()).await;
    entra.push_faults(EntraFault::Status(500), 2);
    entra.push_fault(EntraFault::Delay(Duration::from_millis(300)));
    assert_eq!(entra.pending_faults(), 3);

    let (id, secret) = (entra.client_id(), entra.client_secret());
    for _ in 0..2 {
        let response = client_credentials(&entra, &id, &secret, "x/.default").await;
        assert_eq!(response.status(), 500);
        assert!(json_of(response).await["error_codes"].is_array());
    }
    // The delay applies to the managed identity form as well: one queue for both.
    let started = Instant::now();
    let response = msi(&entra, ARM, Some(&entra.identity_header())).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    let response = client_credentials(&entra, &id, &secret, "x/.default").await;
    assert_eq!(response.status(), 200);
    assert_eq!(entra.pending_faults(), 0);
    assert_eq!(entra.total_token_requests(), 4);
    assert_eq!(entra.issued_tokens().len(), 2);
}

/// The real SDK credential talks to the fake (custom authority host over the test CA), and its
/// token is accepted by the fake ARM.
#[tokio::test]
async fn entra_works_with_azure_identity_client_secret_credential() {
    use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
    use azure_core::credentials::{Secret, TokenCredential};
    use azure_core::http::{ClientOptions, Transport};
    use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};

    let pki = tls::shared();
    let entra = FakeEntra::new()
        .with_token_lifetime(Duration::from_secs(900))
        .serve_https(pki)
        .await;
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = entra.authority_host();
    let credential = ClientSecretCredential::new(
        &entra.tenant_id(),
        entra.client_id(),
        Secret::new(entra.client_secret()),
        Some(ClientSecretCredentialOptions {
            client_options: ClientOptions {
                cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
                transport: Some(Transport::new(Arc::new(tls::client(pki)))),
                ..Default::default()
            },
        }),
    )
    .unwrap();
    let token = credential
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .expect("token from the fake");
    let lifetime = token.expires_on - OffsetDateTime::now_utc();
    assert!(lifetime > time::Duration::seconds(890) && lifetime <= time::Duration::seconds(900));
    // Cached: a second call does not reach the fake.
    credential
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .unwrap();
    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 1);
    assert_eq!(entra.access_tokens(), vec![token.token.secret().to_owned()]);

    let arm = FakeArm::start_https(pki).await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    let response = https_client()
        .get(arm.asset_url("a"))
        .bearer_auth(token.token.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

// ------------------------------------------------------------------------------------------
// Fake ARM
// ------------------------------------------------------------------------------------------

/// A fake ARM over HTTPS and a valid ARM token for it.
async fn arm() -> (FakeArm, String) {
    let arm = FakeArm::start_https(tls::shared()).await;
    let token = FakeEntra::new().mint_token(ARM);
    (arm, token)
}

async fn arm_get(url: &str, token: &str) -> reqwest::Response {
    https_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("ARM request")
}

async fn arm_error_code(response: reqwest::Response) -> String {
    let body = json_of(response).await;
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"]
        .as_str()
        .expect("ARM error code")
        .to_owned()
}

async fn list_sas(arm: &FakeArm, token: &str, name: &str, body: Value) -> reqwest::Response {
    https_client()
        .post(arm.list_container_sas_url(name))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn in_hours(hours: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::hours(hours))
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn arm_get_has_the_shape_of_the_swagger_example() {
    let (arm, token) = arm().await;
    let id = Uuid::parse_str("1b648c1a-2268-461d-a1da-742bde23db40").unwrap();
    arm.add_asset(
        FakeAsset::new("ClimbingMountAdams", id)
            .alternate_id("CLIMB00002")
            .description("A documentary showing the ascent of Mount Adams"),
    );
    let response = arm_get(&arm.asset_url("ClimbingMountAdams"), &token).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-ms-request-id"));
    let mut body = json_of(response).await;

    // Same fields as the example; with the example's values put back for the generated times,
    // the example's asset gives back the example byte for byte.
    let example =
        fake_arm::load_example("assets-get-by-name.json")["responses"]["200"]["body"].clone();
    assert!(
        body["properties"]["created"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    for key in ["created", "lastModified"] {
        body["properties"][key] = example["properties"][key].clone();
    }
    assert_eq!(body, example);
    assert!(body["id"].as_str().unwrap().contains("/mediaservices/"));

    // Defaults: generated container, no storage account, no alternate id / description.
    let other = Uuid::new_v4();
    arm.add_asset(FakeAsset::new("plain", other));
    let body = json_of(arm_get(&arm.asset_url("plain"), &token).await).await;
    assert_eq!(body["properties"]["container"], format!("asset-{other}"));
    assert_eq!(body["properties"]["storageEncryptionFormat"], "None");
    assert_eq!(body["properties"]["assetId"], other.to_string());
    for absent in ["storageAccountName", "alternateId", "description"] {
        assert!(body["properties"].get(absent).is_none(), "{absent}");
    }
    assert_eq!(
        body["id"],
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaservices/{}/assets/plain",
            arm.subscription_id(),
            arm.resource_group(),
            arm.account()
        )
    );

    // And the optional ones when set; the asset's name is case-insensitive as in ARM.
    arm.add_asset(
        FakeAsset::new("stored", other)
            .container("testasset0")
            .storage_account_name("storage0")
            .storage_encryption_format("MediaStorageClientEncryption"),
    );
    let body = json_of(arm_get(&arm.asset_url("STORED"), &token).await).await;
    assert_eq!(body["name"], "stored");
    assert_eq!(body["properties"]["container"], "testasset0");
    assert_eq!(body["properties"]["storageAccountName"], "storage0");
    assert_eq!(
        body["properties"]["storageEncryptionFormat"],
        "MediaStorageClientEncryption"
    );
    assert_eq!(arm.hits(ArmOp::Get), 3);
}

#[tokio::test]
async fn arm_not_found_codes() {
    let (arm, token) = arm().await;
    let response = arm_get(&arm.asset_url("missing"), &token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm_error_code(response).await, "ResourceNotFound");

    let wrong_account = arm
        .asset_url("missing")
        .replace(&arm.account(), "otheraccount");
    let response = arm_get(&wrong_account, &token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm_error_code(response).await, "ParentResourceNotFound");

    let wrong_rg = arm.asset_url("x").replace(&arm.resource_group(), "otherrg");
    assert_eq!(
        arm_error_code(arm_get(&wrong_rg, &token).await).await,
        "ResourceGroupNotFound"
    );

    let response = arm_get(&format!("{}/nothing/here", arm.base_url()), &token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm.hits(ArmOp::Get), 3);
    assert_eq!(arm.total_hits(), 4);
}

#[tokio::test]
async fn arm_requires_an_arm_token_from_the_fake_entra() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    let url = arm.asset_url("a");

    let response = https_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(arm_error_code(response).await, "AuthenticationFailed");

    let entra = FakeEntra::new();
    let storage_token = entra.mint_token("https://storage.azure.com/.default");
    let response = arm_get(&url, &storage_token).await;
    assert_eq!(response.status(), 401);
    assert_eq!(arm_error_code(response).await, "InvalidAuthenticationToken");

    // Same claims, not signed by the fake: rejected.
    let mut forged = token.clone();
    forged.push('x');
    let response = arm_get(&url, &forged).await;
    assert_eq!(response.status(), 401);
    assert_eq!(arm_error_code(response).await, "InvalidAuthenticationToken");

    let mut claims = fake_entra::jwt_claims(&token).unwrap();
    claims["exp"] = json!(now() - 10);
    let expired = fake_entra::mint_jwt(&claims);
    let response = arm_get(&url, &expired).await;
    assert_eq!(response.status(), 401);
    assert_eq!(arm_error_code(response).await, "ExpiredAuthenticationToken");

    // A trailing slash on the audience is fine, as in ARM.
    let slash = FakeEntra::new().mint_token("https://management.azure.com/");
    assert_eq!(arm_get(&url, &slash).await.status(), 200);
}

#[tokio::test]
async fn arm_requires_api_version_2023_01_01() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    let url = arm.asset_url("a");
    let without = url.split('?').next().unwrap().to_owned();
    let response = arm_get(&without, &token).await;
    assert_eq!(response.status(), 400);
    assert_eq!(arm_error_code(response).await, "MissingApiVersionParameter");
    let response = arm_get(&url.replace("2023-01-01", "2018-07-01"), &token).await;
    assert_eq!(response.status(), 400);
    assert_eq!(arm_error_code(response).await, "InvalidApiVersionParameter");
}

#[tokio::test]
async fn arm_forbidden_switch_is_403_authorization_failed() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    arm.set_forbidden(true);
    let response = arm_get(&arm.asset_url("a"), &token).await;
    assert_eq!(response.status(), 403);
    let body = json_of(response).await;
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    let oid = fake_entra::jwt_claims(&token).unwrap()["oid"].clone();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(oid.as_str().unwrap())
    );
    arm.set_forbidden(false);
    assert_eq!(arm_get(&arm.asset_url("a"), &token).await.status(), 200);
}

#[tokio::test]
async fn arm_429_carries_retry_after_and_is_consumed() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    arm.push_fault(
        ArmOp::Get,
        ArmFault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let response = arm_get(&arm.asset_url("a"), &token).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(arm_error_code(response).await, "TooManyRequests");
    assert_eq!(arm.pending_faults(ArmOp::Get), 0);
    assert_eq!(arm_get(&arm.asset_url("a"), &token).await.status(), 200);
}

/// Adds `n` assets named `asset-00`..; returns them in name order.
fn add_assets(arm: &FakeArm, n: usize) -> Vec<FakeAsset> {
    (0..n)
        .map(|i| {
            let asset = FakeAsset::new(format!("asset-{i:02}"), Uuid::new_v4())
                .alternate_id(format!("ALT{i:02}"));
            arm.add_asset(asset.clone());
            asset
        })
        .collect()
}

/// Follows `@odata.nextLink` from `url`; returns the names on each page.
async fn list_pages(url: &str, token: &str, max_pages: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(url.to_owned());
    while let Some(url) = next.take() {
        assert!(pages.len() < max_pages, "more than {max_pages} pages");
        let response = arm_get(&url, token).await;
        assert_eq!(response.status(), 200, "{url}");
        let body = json_of(response).await;
        pages.push(
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_owned())
                .collect(),
        );
        next = body["@odata.nextLink"].as_str().map(str::to_owned);
    }
    pages
}

#[tokio::test]
async fn arm_list_pages_with_absolute_next_links() {
    let arm = FakeArm::new()
        .with_page_size(2)
        .serve_https(tls::shared())
        .await;
    let token = FakeEntra::new().mint_token(ARM);
    let assets = add_assets(&arm, 5);

    let first = json_of(arm_get(&arm.assets_url(), &token).await).await;
    let link = first["@odata.nextLink"].as_str().unwrap();
    assert!(link.starts_with(&format!("{}{}/assets?", arm.base_url(), arm.account_path())));
    assert!(link.contains("api-version=2023-01-01") && link.contains("$skiptoken="));
    // The list body is the example's, items shaped like the example's items.
    let example =
        fake_arm::load_example("assets-list-all.json")["responses"]["200"]["body"].clone();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&first["value"][0]), keys(&example["value"][0]));

    let pages = list_pages(&arm.assets_url(), &token, 10).await;
    let names = |r: std::ops::Range<usize>| -> Vec<String> {
        assets[r].iter().map(|a| a.name.clone()).collect()
    };
    assert_eq!(pages, vec![names(0..2), names(2..4), names(4..5)]);
    assert_eq!(arm.hits(ArmOp::List), 4);

    // $top limits the whole listing, across pages.
    let pages = list_pages(&format!("{}&$top=3", arm.assets_url()), &token, 10).await;
    assert_eq!(pages, vec![names(0..2), names(2..3)]);
}

#[tokio::test]
async fn arm_list_filters_by_alternate_id_and_asset_id() {
    let (arm, token) = arm().await;
    let assets = add_assets(&arm, 4);
    let target = &assets[2];
    let list = |filter: &str| {
        let url = reqwest::Url::parse_with_params(&arm.assets_url(), &[("$filter", filter)])
            .unwrap()
            .to_string();
        let token = token.clone();
        async move {
            let response = arm_get(&url, &token).await;
            (response.status().as_u16(), json_of(response).await)
        }
    };
    let id = target.asset_id;
    for filter in [
        "properties/alternateId eq 'ALT02'".to_owned(),
        format!("properties/assetId eq {id}"),
        format!("properties/assetId eq '{id}'"),
        format!("properties/assetId eq guid'{id}'"),
        "name eq 'asset-02'".to_owned(),
    ] {
        let (status, body) = list(&filter).await;
        assert_eq!(status, 200, "{filter}: {body}");
        let value = body["value"].as_array().unwrap();
        assert_eq!(value.len(), 1, "{filter}");
        assert_eq!(value[0]["name"], target.name);
        assert!(body.get("@odata.nextLink").is_none());
    }
    let (status, body) = list("properties/alternateId eq 'nope'").await;
    assert_eq!((status, body["value"].as_array().unwrap().len()), (200, 0));

    let (status, body) = list("properties/description eq 'x'").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
}

#[tokio::test]
async fn arm_list_container_sas_uses_the_minter_and_caps_expiry_at_24_hours() {
    let (arm, token) = arm().await;
    let asset = FakeAsset::new("a", Uuid::new_v4()).storage_account_name("devstoreaccount1");
    arm.add_asset(asset.clone());
    let seen: Arc<Mutex<Vec<(String, String, OffsetDateTime)>>> = Arc::default();
    let record = seen.clone();
    arm.set_container_sas_minter(Box::new(move |asset, permissions, expiry| {
        record
            .lock()
            .unwrap()
            .push((asset.container_name(), permissions.to_owned(), expiry));
        vec![format!(
            "https://127.0.0.1:10000/devstoreaccount1/{}?sp=rl&sig=x",
            asset.container_name()
        )]
    }));

    let expiry = in_hours(1);
    let response = list_sas(
        &arm,
        &token,
        "a",
        json!({"permissions": "Read", "expiryTime": expiry}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(
        body,
        json!({"assetContainerSasUrls": [format!(
            "https://127.0.0.1:10000/devstoreaccount1/{}?sp=rl&sig=x",
            asset.container_name()
        )]})
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, asset.container_name());
        assert_eq!(seen[0].1, "Read");
        assert_eq!(seen[0].2, OffsetDateTime::parse(&expiry, &Rfc3339).unwrap());
    }

    for bad in [
        json!({"permissions": "Read", "expiryTime": in_hours(25)}),
        json!({"permissions": "Read", "expiryTime": in_hours(-1)}),
        json!({"permissions": "Write", "expiryTime": in_hours(1)}),
        json!({"permissions": "Read"}),
    ] {
        let response = list_sas(&arm, &token, "a", bad.clone()).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(arm_error_code(response).await, "BadRequest");
    }
    let response = list_sas(
        &arm,
        &token,
        "missing",
        json!({"permissions": "Read", "expiryTime": in_hours(1)}),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(arm.hits(ArmOp::ListContainerSas), 6);
}

#[tokio::test]
async fn arm_list_container_sas_without_a_minter_looks_like_the_example() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()).storage_account_name("storage0"));
    let body = json_of(
        list_sas(
            &arm,
            &token,
            "a",
            json!({"permissions": "ReadWrite", "expiryTime": in_hours(2)}),
        )
        .await,
    )
    .await;
    let urls = body["assetContainerSasUrls"].as_array().unwrap();
    assert_eq!(urls.len(), 2);
    for url in urls {
        let url = reqwest::Url::parse(url.as_str().unwrap()).unwrap();
        assert_eq!(url.host_str(), Some("storage0.blob.core.windows.net"));
        assert!(url.query_pairs().any(|(k, v)| k == "sp" && v == "lrw"));
    }
}

#[tokio::test]
async fn arm_fault_queues_are_per_operation_and_consumed_in_order() {
    let (arm, token) = arm().await;
    add_assets(&arm, 3);
    arm.push_faults(ArmOp::Get, ArmFault::Status(503), 2);
    arm.push_fault(ArmOp::Get, ArmFault::Delay(Duration::from_millis(300)));
    arm.push_fault(ArmOp::List, ArmFault::MalformedJson);
    assert_eq!(arm.pending_faults(ArmOp::Get), 3);

    // List's fault does not touch Get and the other way round.
    let response = arm_get(&arm.assets_url(), &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("{\"value\":["), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(arm.pending_faults(ArmOp::List), 0);

    let url = arm.asset_url("asset-00");
    for _ in 0..2 {
        let response = arm_get(&url, &token).await;
        assert_eq!(response.status(), 503);
        assert_eq!(arm_error_code(response).await, "ServiceUnavailable");
    }
    let started = Instant::now();
    assert_eq!(arm_get(&url, &token).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(arm_get(&url, &token).await.status(), 200);
    assert_eq!(arm.pending_faults(ArmOp::Get), 0);
    assert_eq!(arm.hits(ArmOp::Get), 4);
    assert_eq!(arm.hits(ArmOp::List), 1);
    assert_eq!(arm.total_hits(), 5);
}

#[tokio::test]
async fn arm_next_link_loop_points_at_the_same_page_forever() {
    let arm = FakeArm::new()
        .with_page_size(2)
        .serve_https(tls::shared())
        .await;
    let token = FakeEntra::new().mint_token(ARM);
    add_assets(&arm, 3);
    arm.push_fault(ArmOp::List, ArmFault::NextLinkLoop);

    let first = json_of(arm_get(&arm.assets_url(), &token).await).await;
    let link = first["@odata.nextLink"].as_str().unwrap().to_owned();
    let mut url = link.clone();
    for _ in 0..5 {
        let page = json_of(arm_get(&url, &token).await).await;
        assert_eq!(page["value"], first["value"]);
        assert_eq!(page["@odata.nextLink"], link);
        url = link.clone();
    }
    assert_eq!(arm.pending_faults(ArmOp::List), 0);
    // A fresh listing without the fault ends normally.
    assert_eq!(list_pages(&arm.assets_url(), &token, 5).await.len(), 2);
}

#[tokio::test]
async fn arm_drop_connection_gives_no_response_over_tls_and_plain_http() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    arm.push_fault(ArmOp::Get, ArmFault::DropConnection);
    let error = https_client()
        .get(arm.asset_url("a"))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("no response");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    assert_eq!(arm_get(&arm.asset_url("a"), &token).await.status(), 200);

    // Plain HTTP/1.1 via axum::serve: the socket is closed.
    let plain = FakeArm::new();
    plain.set_base_url(serve_http(plain.router()).await);
    plain.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    plain.push_fault(ArmOp::Get, ArmFault::DropConnection);
    let client = reqwest::Client::new();
    let error = client
        .get(plain.asset_url("a"))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("no response");
    assert!(!error.is_status(), "{error:?}");
    let response = client
        .get(plain.asset_url("a"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(plain.hits(ArmOp::Get), 2);
}

#[tokio::test]
async fn arm_counts_hits_and_records_the_last_authorization() {
    let (arm, token) = arm().await;
    add_assets(&arm, 2);
    assert!(arm.last_authorization().is_none());
    arm_get(&arm.asset_url("asset-00"), &token).await;
    arm_get(&arm.assets_url(), &token).await;
    list_sas(
        &arm,
        &token,
        "asset-01",
        json!({"permissions": "Read", "expiryTime": in_hours(1)}),
    )
    .await;
    assert_eq!(
        (
            arm.hits(ArmOp::Get),
            arm.hits(ArmOp::List),
            arm.hits(ArmOp::ListContainerSas),
            arm.total_hits()
        ),
        (1, 1, 1, 3)
    );
    let last = arm.last_authorization().unwrap();
    assert_eq!(last.operation, Some(ArmOp::ListContainerSas));
    assert_eq!(
        last.header.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(last.claims.unwrap()["aud"], ARM);

    https_client().get(arm.assets_url()).send().await.unwrap();
    let last = arm.last_authorization().unwrap();
    assert_eq!((last.operation, last.header), (Some(ArmOp::List), None));
}

#[tokio::test]
async fn arm_router_serves_over_plain_http_with_next_links_to_the_set_base() {
    let arm = FakeArm::new().with_page_size(1);
    let base = serve_http(arm.router()).await;
    arm.set_base_url(&base);
    add_assets(&arm, 2);
    let token = FakeEntra::new().mint_token(ARM);
    let client = reqwest::Client::new();
    let body: Value = client
        .get(arm.assets_url())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = body["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{base}/subscriptions/")),
        "{next}"
    );
    let body: Value = client
        .get(next)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["value"][0]["name"], "asset-01");
    assert!(body.get("@odata.nextLink").is_none());
}
