//! The shared tier (`[cache.shared]`): three replicas of the service against one real
//! `redis-server` and one Azurite behave as one service. A cold storm loads each asset once in
//! total, an invalidation through one replica reaches the others, "not found" is shared, every
//! replica serves the same signed URLs, Redis holds answers but no secret, and a Redis that is
//! killed, restarted or hangs never makes a request fail.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ams_thumbnails::Settings;
use futures::future::join_all;
use serde_json::Value;
use support::TestServer;
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::redis::Redis;
use support::seed::{create_container, get_blob, put_blob};

const ADMIN_KEY: &str = "test-admin-key";
/// sha256(ADMIN_KEY)
const ADMIN_SHA: &str = "944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9";

fn jpeg() -> Vec<u8> {
    std::fs::read(support::samples_dir().join("sprite-storyboard/Thumbnail000001.jpg")).unwrap()
}

/// An asset's container with `n` thumbnails.
async fn seed(client: &reqwest::Client, az: &Azurite, id: &str, n: usize) {
    let container = format!("asset-{id}");
    create_container(client, az, &container, None).await;
    for i in 1..=n {
        add_thumbnail(client, az, id, i).await;
    }
}

async fn add_thumbnail(client: &reqwest::Client, az: &Azurite, id: &str, i: usize) {
    let name = format!("Thumbnail{i:06}.jpg");
    put_blob(
        client,
        az,
        &format!("asset-{id}"),
        &name,
        &jpeg(),
        "image/jpeg",
    )
    .await;
}

fn replica_settings(az: &Azurite, redis: &Redis, extra: &str) -> Settings {
    // Unless a test plays a slow Redis: a timeout a loaded test machine never reaches, so that
    // the tier is never skipped (and loads counted twice) because a build hogs the cores.
    let timeout = if extra.contains("timeout") {
        ""
    } else {
        "timeout = \"2s\"\n"
    };
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [source]\nkind = \"storage\"\n\
         [storage]\naccount = \"{ACCOUNT}\"\nendpoint = \"{endpoint}\"\nauth = \"account-key\"\naccount_key = \"{KEY}\"\n\
         [auth]\nallow_anonymous_signed_urls = true\n\
         api_keys = [{{ name = \"ops\", sha256 = \"{ADMIN_SHA}\", roles = [\"admin\"] }}]\n\
         [links]\nmode = \"account-key-sas\"\nallow_http = true\n\
         [cache]\nttl = \"1h\"\nnot_found_ttl = \"1h\"\n\
         [cache.shared]\nurl = \"{url}\"\nkey_prefix = \"test:\"\n{timeout}{extra}",
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
        url = redis.url(),
    );
    Settings::from_toml(&toml).expect("replica settings")
}

async fn replicas(settings: &Settings, n: usize) -> Vec<TestServer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestServer::start(settings.clone()).await);
    }
    // Each replica's listener subscribes in the background: wait until all are ready.
    for r in &out {
        wait_for(Duration::from_secs(5), || async {
            shared_status(r).await.as_deref() == Some("up")
        })
        .await;
    }
    out
}

/// The `shared-cache` check of `/readyz`, and asserts the replica stays ready.
async fn shared_status(r: &TestServer) -> Option<String> {
    let response = r.get("/readyz").await;
    assert_eq!(
        response.status(),
        200,
        "the shared tier never makes a replica unready"
    );
    let body: Value = response.json().await.unwrap();
    body["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "shared-cache")
        .map(|c| c["status"].as_str().unwrap().to_owned())
}

async fn wait_for<F, Fut>(within: Duration, mut ok: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !ok().await {
        assert!(started.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn thumbnails(r: &TestServer, id: &str) -> (u16, String) {
    let response = r.get(&format!("/assets/{id}/thumbnails")).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn count(body: &str) -> usize {
    let v: Value = serde_json::from_str(body).unwrap();
    v["thumbnails"].as_array().unwrap().len()
}

fn total(rs: &[TestServer], f: impl Fn(&support::Probe) -> usize) -> usize {
    rs.iter().map(|r| f(&r.probe)).sum()
}

async fn invalidate(r: &TestServer, id: &str) {
    let response = r
        .client
        .delete(r.url(&format!("/assets/{id}/cache")))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_storm_through_three_replicas_loads_each_asset_once_and_serves_one_answer() {
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..20).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &ids {
        seed(&client, &az, id, 3).await;
    }
    let rs = Arc::new(replicas(&replica_settings(&az, &redis, ""), 3).await);
    for r in rs.iter() {
        // Wide race windows: every replica is mid-load when the others ask.
        r.probe.set_delay(Duration::from_millis(30));
    }
    let requests = ids.iter().flat_map(|id| {
        let rs = rs.clone();
        (0..9).map(move |n| {
            let (rs, id) = (rs.clone(), id.clone());
            tokio::spawn(async move { (id.clone(), n % 3, thumbnails(&rs[n % 3], &id).await) })
        })
    });
    let answers: Vec<_> = join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (id, replica, (status, body)) in &answers {
        assert_eq!(*status, 200, "{id} on replica {replica}: {body}");
        assert_eq!(count(body), 3, "{body}");
        // Every replica serves the very same answer: same signed URLs, same ETag.
        let first = &answers.iter().find(|a| &a.0 == id).unwrap().2.1;
        assert_eq!(body, first, "{id} on replica {replica}");
    }
    assert_eq!(
        total(&rs, |p| p.locates.load(Ordering::SeqCst)),
        ids.len(),
        "one locate per asset"
    );
    assert_eq!(
        total(&rs, |p| p.lists.load(Ordering::SeqCst)),
        ids.len(),
        "one listing per asset"
    );
    assert_eq!(
        total(&rs, |p| p.links.load(Ordering::SeqCst)),
        ids.len(),
        "one signing per asset"
    );
    // The URLs a replica took from Redis work.
    let v: Value = serde_json::from_str(&answers[2].2.1).unwrap();
    for t in v["thumbnails"].as_array().unwrap() {
        let (status, bytes) = get_blob(&client, t["url"].as_str().unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(&bytes[..], &jpeg()[..]);
    }

    // What Redis holds: the answers, and no secret.
    let keys = redis.cli(&["--scan", "--pattern", "test:*"]).await;
    let keys: Vec<&str> = keys.lines().map(|k| k.trim_matches('"')).collect();
    assert!(keys.len() >= ids.len(), "{keys:?}");
    for key in &keys {
        let kind = redis.cli(&["TYPE", key]).await;
        let value = if kind.contains("set") {
            redis.raw(&["SMEMBERS", key]).await
        } else {
            redis.raw(&["GET", key]).await
        };
        let value = String::from_utf8_lossy(&value);
        assert!(!value.contains(KEY), "the account key is in {key}");
        assert!(
            !value.contains(&KEY[..20]),
            "part of the account key is in {key}"
        );
        assert!(!value.to_ascii_lowercase().contains("bearer"), "{key}");
    }
    let entry = redis.raw(&["GET", &format!("test:e:{}", ids[0])]).await;
    let body = &answers.iter().find(|a| a.0 == ids[0]).unwrap().2.1;
    assert!(
        String::from_utf8_lossy(&entry).contains(body.as_str()),
        "the stored entry holds the rendered answer"
    );
    let ttl = redis.cli(&["PTTL", &format!("test:e:{}", ids[0])]).await;
    let ttl: i64 = ttl
        .trim()
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap_or_else(|_| panic!("PTTL answered {ttl:?}"));
    assert!(ttl > 0, "an entry expires with its validity: {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_through_one_replica_reaches_every_replica_within_a_second() {
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().to_string();
    seed(&client, &az, &id, 2).await;
    let rs = replicas(&replica_settings(&az, &redis, ""), 3).await;
    for r in &rs {
        for _ in 0..2 {
            let (status, body) = thumbnails(r, &id).await;
            assert_eq!((status, count(&body)), (200, 2));
        }
    }
    assert_eq!(total(&rs, |p| p.lists.load(Ordering::SeqCst)), 1);
    // A new thumbnail, then an invalidation through replica 0: the others see it.
    add_thumbnail(&client, &az, &id, 3).await;
    assert_eq!(
        count(&thumbnails(&rs[2], &id).await.1),
        2,
        "cached until told"
    );
    invalidate(&rs[0], &id).await;
    for r in &rs[1..] {
        wait_for(Duration::from_secs(1), || async {
            count(&thumbnails(r, &id).await.1) == 3
        })
        .await;
    }
    assert_eq!(count(&thumbnails(&rs[0], &id).await.1), 3);
    assert_eq!(
        total(&rs, |p| p.lists.load(Ordering::SeqCst)),
        2,
        "loaded once more, in all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_shared_and_invalidated_everywhere() {
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().to_string();
    let rs = replicas(&replica_settings(&az, &redis, ""), 3).await;
    for r in &rs {
        assert_eq!(thumbnails(r, &id).await.0, 404);
    }
    assert_eq!(
        total(&rs, |p| p.locates.load(Ordering::SeqCst)),
        1,
        "one look for all"
    );
    seed(&client, &az, &id, 1).await;
    assert_eq!(
        thumbnails(&rs[1], &id).await.0,
        404,
        "remembered until told"
    );
    invalidate(&rs[2], &id).await;
    for r in &rs {
        wait_for(Duration::from_secs(1), || async {
            thumbnails(r, &id).await.0 == 200
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_serves_nothing_wrong() {
    let (az, mut redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for (n, id) in ids.iter().enumerate() {
        seed(&client, &az, id, n + 1).await;
    }
    let rs = Arc::new(replicas(&replica_settings(&az, &redis, "timeout = \"50ms\"\n"), 3).await);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load = (0..4).map(|worker| {
        let (rs, ids, stop, served) = (rs.clone(), ids.clone(), stop.clone(), served.clone());
        tokio::spawn(async move {
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                let (replica, i) = (n % 3, (n / 3) % ids.len());
                let (status, body) = thumbnails(&rs[replica], &ids[i]).await;
                assert_eq!(status, 200, "replica {replica}: {body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["assetId"], ids[i].as_str(), "the asset asked for");
                assert_eq!(count(&body), i + 1, "{body}");
                if n % 7 == 0 {
                    invalidate(&rs[(n + 1) % 3], &ids[(i + 1) % ids.len()]).await;
                }
                served.fetch_add(1, Ordering::Relaxed);
                n += 4;
            }
        })
    });
    let load: Vec<_> = load.collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shared_status(&rs[0]).await.as_deref(), Some("degraded"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart().await;
    for r in rs.iter() {
        wait_for(Duration::from_secs(10), || async {
            shared_status(r).await.as_deref() == Some("up")
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("no request went wrong");
    }
    assert!(served.load(Ordering::Relaxed) > 50, "{served:?}");

    // After the restart, the tier works again: an invalidation through one reaches the others.
    let id = &ids[0];
    for r in rs.iter() {
        assert_eq!(count(&thumbnails(r, id).await.1), 1);
    }
    add_thumbnail(&client, &az, id, 2).await;
    invalidate(&rs[1], id).await;
    for r in rs.iter() {
        wait_for(Duration::from_secs(1), || async {
            count(&thumbnails(r, id).await.1) == 2
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_delays_a_miss_by_its_timeout_at_most() {
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &ids {
        seed(&client, &az, id, 1).await;
    }
    let rs = replicas(&replica_settings(&az, &redis, "timeout = \"50ms\"\n"), 1).await;
    let r = &rs[0];
    assert_eq!(thumbnails(r, &ids[0]).await.0, 200);
    redis.pause();
    // A moka hit never calls Redis.
    assert_eq!(thumbnails(r, &ids[0]).await.0, 200);
    // A miss tries Redis once (50 ms), then goes on without it; the next skips it.
    for id in &ids[1..] {
        let started = Instant::now();
        assert_eq!(thumbnails(r, id).await.0, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(shared_status(r).await.as_deref(), Some("degraded"));
    // An invalidation while Redis hangs is kept and sent once it answers.
    invalidate(r, &ids[0]).await;
    redis.resume();
    wait_for(Duration::from_secs(5), || async {
        shared_status(r).await.as_deref() == Some("up")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_overtaken_by_an_invalidation_is_loaded_again_and_only_that_is_stored() {
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().to_string();
    seed(&client, &az, &id, 1).await;
    let rs = Arc::new(replicas(&replica_settings(&az, &redis, ""), 2).await);
    rs[0].probe.set_delay(Duration::from_millis(400));
    let slow = {
        let (rs, id) = (rs.clone(), id.clone());
        tokio::spawn(async move { thumbnails(&rs[0], &id).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Replica 0 holds the lock and is mid-load: the invalidation takes the lock away.
    invalidate(&rs[1], &id).await;
    let (status, _) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        rs[0].probe.locates.load(Ordering::SeqCst),
        2,
        "loaded again"
    );
    // The overtaken load's write was refused (its lock was gone); the load after it stored.
    let stored = redis.cli(&["EXISTS", &format!("test:e:{id}")]).await;
    assert!(stored.contains('1'), "{stored}");
    let metrics = rs[0].get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("shared_cache_fenced_out_total"),
        "the refused write is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_file() {
    let pki = support::tls::shared();
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start_tls(pki, "s3cret-pw"));
    let client = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().to_string();
    seed(&client, &az, &id, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    let extra = format!(
        "password_file = \"{}\"\nca_file = \"{}\"\n",
        password_file.display(),
        pki.ca_pem.display()
    );
    let rs = replicas(&replica_settings(&az, &redis, &extra), 2).await;
    for r in &rs {
        assert_eq!(count(&thumbnails(r, &id).await.1), 2);
    }
    assert_eq!(
        total(&rs, |p| p.lists.load(Ordering::SeqCst)),
        1,
        "shared over TLS"
    );
    assert!(
        redis
            .cli(&["EXISTS", &format!("test:e:{id}")])
            .await
            .contains('1')
    );

    // Without the CA the server's certificate is not trusted: the tier is degraded, the
    // replica answers all the same.
    let untrusted = replica_settings(
        &az,
        &redis,
        &format!("password_file = \"{}\"\n", password_file.display()),
    );
    let r = TestServer::start(untrusted).await;
    assert_eq!(count(&thumbnails(&r, &id).await.1), 2);
    assert_eq!(shared_status(&r).await.as_deref(), Some("degraded"));
    // A wrong password: the same.
    std::fs::write(&password_file, "wrong").unwrap();
    let r = TestServer::start(replica_settings(&az, &redis, &extra)).await;
    assert_eq!(count(&thumbnails(&r, &id).await.1), 2);
    assert_eq!(shared_status(&r).await.as_deref(), Some("degraded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_died_holding_a_lock_delays_the_others_until_its_expiry_only() {
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().to_string();
    seed(&client, &az, &id, 1).await;
    let rs = replicas(&replica_settings(&az, &redis, "lock_ttl = \"2s\"\n"), 2).await;
    // The lock a replica took just before it died: never released, gone after its PX.
    let lock = format!("test:l:{id}");
    assert!(
        redis
            .cli(&["SET", &lock, "dead-replica-7", "NX", "PX", "1500"])
            .await
            .contains("OK")
    );
    let started = Instant::now();
    let ((a, _), (b, _)) = tokio::join!(thumbnails(&rs[0], &id), thumbnails(&rs[1], &id));
    let waited = started.elapsed();
    assert_eq!((a, b), (200, 200));
    assert!(
        waited >= Duration::from_millis(1200),
        "the lock was honoured: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "and not much longer: {waited:?}"
    );
    assert_eq!(
        total(&rs, |p| p.locates.load(Ordering::SeqCst)),
        1,
        "then loaded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_grid_delivery_to_one_replica_shows_a_new_blob_on_all_at_once() {
    use crate::events::{SECRET, deliver, event_for, post};
    let (az, redis) = tokio::join!(Azurite::start_http(), Redis::start());
    let client = reqwest::Client::new();
    let id = uuid::Uuid::new_v4().to_string();
    let container = format!("asset-{id}");
    seed(&client, &az, &id, 1).await;
    let mut settings = replica_settings(&az, &redis, "");
    settings.events = Settings::from_toml(&format!(
        "[events]\nenabled = true\nsecret = \"{SECRET}\"\n"
    ))
    .unwrap()
    .events;
    let rs = replicas(&settings, 3).await;
    for r in &rs {
        assert_eq!(count(&thumbnails(r, &id).await.1), 1);
    }
    // The subscription's validation handshake, through any replica.
    let validation = post(
        &rs[2],
        &format!("?code={SECRET}"),
        "application/json",
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/eventgrid/subscription-validation.eventgrid.json"),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(validation.status(), 200);
    assert!(
        validation
            .text()
            .await
            .unwrap()
            .contains("validationResponse")
    );

    // A wrong secret: refused, nothing invalidated anywhere.
    add_thumbnail(&client, &az, &id, 2).await;
    let blob = "Thumbnail000002.jpg";
    let refused = post(
        &rs[0],
        "?code=not-the-secret-at-all",
        "application/json",
        event_for("blob-created.eventgrid.json", &container, blob),
    )
    .await;
    assert_eq!(refused.status(), 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for r in &rs {
        assert_eq!(count(&thumbnails(r, &id).await.1), 1, "still cached");
    }
    // Event Grid schema to replica 0, then CloudEvents to replica 1: every replica lists the
    // new blob within a second, and its URL serves it.
    for (schema, via, n) in [("eventgrid", 0, 2), ("cloudevents", 1, 3)] {
        if n == 3 {
            add_thumbnail(&client, &az, &id, 3).await;
        }
        deliver(
            &rs[via],
            schema,
            &container,
            &format!("Thumbnail{n:06}.jpg"),
        )
        .await;
        for r in &rs {
            wait_for(Duration::from_secs(1), || async {
                count(&thumbnails(r, &id).await.1) == n
            })
            .await;
        }
        let v: Value = serde_json::from_str(&thumbnails(&rs[2], &id).await.1).unwrap();
        let url = v["thumbnails"][n - 1]["url"].as_str().unwrap().to_owned();
        let (status, bytes) = get_blob(&client, &url).await;
        assert_eq!((status, &bytes[..]), (200, &jpeg()[..]), "{schema}");
    }
}
