//! What Prometheus sees: every family the service records is named `ams_thumbnails_*` with its
//! unit in the name and a `# HELP`; `ams_thumbnails_build_info` and the standard `process_*`
//! metrics are there; every name recorded in `src/` is described; `metrics.listen` moves
//! `/metrics` to a port of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ams_thumbnails::metrics::{FAMILIES, Kind, PREFIX};

use crate::support::{self, TestServer, settings};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every metric name recorded with the `metrics` macros in `src/`, with its kind.
fn recorded_in_src() -> BTreeMap<String, BTreeSet<&'static str>> {
    let literal = regex::Regex::new(r#"\b(counter|gauge|histogram)!\(\s*"([^"]*)""#).unwrap();
    let computed = regex::Regex::new(r#"\b(counter|gauge|histogram)!\(\s*[^"\s]"#).unwrap();
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut names: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !computed.is_match(&text),
            "{}: a metric name that is not a literal cannot be checked against FAMILIES",
            file.display()
        );
        for c in literal.captures_iter(&text) {
            let kind = match &c[1] {
                "counter" => "counter",
                "gauge" => "gauge",
                _ => "histogram",
            };
            names.entry(c[2].to_owned()).or_default().insert(kind);
        }
    }
    names
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

#[test]
fn every_recorded_metric_is_described_once_with_its_unit_in_its_name() {
    let recorded = recorded_in_src();
    assert!(
        recorded.len() >= 30,
        "the scan found the call sites: {recorded:?}"
    );
    let mut described = BTreeMap::new();
    for family in FAMILIES {
        assert!(
            described.insert(family.name, family).is_none(),
            "{} described twice",
            family.name
        );
        assert!(
            !family.name.starts_with(PREFIX),
            "{}: the prefix is added by the recorder",
            family.name
        );
        assert!(
            family.help.len() > 20 && !family.help.contains('\n'),
            "{}",
            family.name
        );
        let unit_suffix = match family.kind {
            Kind::Counter => "_total",
            Kind::Histogram => "_seconds",
            Kind::Gauge if family.unit == metrics::Unit::Bytes => "_bytes",
            Kind::Gauge => "",
        };
        assert!(
            family.name.ends_with(unit_suffix),
            "{} ({:?}) must end in {unit_suffix}",
            family.name,
            family.kind
        );
        let kinds = recorded.get(family.name);
        assert_eq!(
            kinds,
            Some(&BTreeSet::from([kind_name(family.kind)])),
            "{} is described as a {:?}: src/ must record it, as that and nothing else",
            family.name,
            family.kind
        );
    }
    let undescribed: Vec<_> = recorded
        .keys()
        .filter(|name| !described.contains_key(name.as_str()))
        .collect();
    assert!(
        undescribed.is_empty(),
        "recorded in src/ but missing from metrics::FAMILIES: {undescribed:?}"
    );
}

/// `# TYPE` name -> type, `# HELP` name -> text, and the family of every sample line.
struct Scrape {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: Vec<String>,
}

fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape {
        types: BTreeMap::new(),
        helps: BTreeMap::new(),
        samples: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            scrape.types.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            scrape.helps.insert(name.to_owned(), help.to_owned());
        } else {
            assert!(!line.starts_with('#'), "{line}");
            let name = line.split(['{', ' ']).next().unwrap();
            scrape.samples.push(name.to_owned());
        }
    }
    scrape
}

#[tokio::test]
async fn a_scrape_is_prefixed_described_and_carries_build_and_process_metrics() {
    let server = TestServer::start(settings("")).await;
    server.get("/assets/virtual-folders/thumbnails").await;
    server.get("/assets/virtual-folders/thumbnails").await;
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let scrape = parse(&text);

    for (name, kind) in &scrape.types {
        assert!(
            name.starts_with(&format!("{PREFIX}_")) || name.starts_with("process_"),
            "{name}: neither ams_thumbnails_ nor process_"
        );
        let help = scrape.helps.get(name);
        assert!(
            help.is_some_and(|h| !h.is_empty()),
            "{name} ({kind}) has no # HELP"
        );
        if let Some(short) = name.strip_prefix(&format!("{PREFIX}_")) {
            let family = FAMILIES.iter().find(|f| f.name == short);
            let family = family.unwrap_or_else(|| panic!("{name} is not in FAMILIES"));
            assert_eq!(kind, kind_name(family.kind), "{name}");
            assert_eq!(help.unwrap(), family.help, "{name}");
        }
    }
    for sample in &scrape.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = sample.strip_suffix(s)?;
                (scrape.types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(sample);
        assert!(
            scrape.types.contains_key(family),
            "{sample}: a sample without # TYPE"
        );
    }
    // What this request recorded, under its prefixed names.
    for family in [
        "http_requests_total",
        "http_request_duration_seconds",
        "cache_hits_total",
        "cache_entries",
        "cache_bytes",
        "cache_max_bytes",
        "upstream_requests_total",
        "build_info",
    ] {
        let name = format!("{PREFIX}_{family}");
        assert!(scrape.types.contains_key(&name), "{name} missing:\n{text}");
    }
    assert!(
        support::metric(&text, "cache_hits_total", &[]) >= 1.0,
        "support::metric reads the prefixed names"
    );
    let build_info = format!(
        "{PREFIX}_build_info{{version=\"{}\",profile=\"debug\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build_info), "{build_info} in:\n{text}");

    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} has no value"));
        assert!(value > 0.0, "{name} = {value}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_listen_serves_metrics_on_its_own_port_only() {
    let server = TestServer::start(settings("[metrics]\nlisten = \"127.0.0.1:0\"\n")).await;
    let metrics_base = server.metrics_base.clone().expect("a metrics listener");
    assert_ne!(metrics_base, server.base);

    server.get("/assets/virtual-folders/thumbnails").await;
    let scraped = server
        .client
        .get(format!("{metrics_base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(text.contains(&format!("# HELP {PREFIX}_http_requests_total ")));
    assert!(text.contains("# TYPE process_open_fds gauge"));

    // Gone from the public port, like any path without a route; and the metrics port serves
    // nothing else.
    support::assert_problem(server.get("/metrics").await, 404, "route-not-found").await;
    for path in ["/healthz", "/assets/virtual-folders/thumbnails"] {
        let other = server
            .client
            .get(format!("{metrics_base}{path}"))
            .send()
            .await
            .unwrap();
        support::assert_problem(other, 404, "route-not-found").await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_metrics_port_keeps_the_ops_access() {
    let key = "scraper-key-0123456789";
    let toml = format!(
        "[auth]\nops = \"api-key\"\napi_keys = [{{ name = \"prometheus\", sha256 = \"{}\", roles = [\"ops\"] }}]\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        crate::security::sha256(key)
    );
    let server = TestServer::start(settings(&toml)).await;
    let url = format!("{}/metrics", server.metrics_base.clone().unwrap());
    let anonymous = server.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let keyed = server
        .client
        .get(&url)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);
    server.stop().await.unwrap();
}

#[test]
fn metrics_listen_must_be_a_second_port() {
    let error = ams_thumbnails::Settings::from_toml(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[metrics]\nlisten = \"0.0.0.0:8080\"\n",
    )
    .unwrap_err();
    assert!(error.to_string().contains("metrics.listen"), "{error}");
}
