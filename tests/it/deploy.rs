//! `deploy/` against the service, without promtool or a cluster (`scripts/check-deploy` runs
//! those): the alerting rules use only series the service exports, label values it records,
//! and each alert has a promtool test that makes it fire and one that keeps it quiet; the
//! Kubernetes probes name real routes and the pod's user is the image's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ams_thumbnails::metrics::{FAMILIES, Kind, PREFIX};
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value:?}"))
}

/// The family (short name) a series name belongs to, if the service exports it.
fn family_of(series: &str) -> Option<&'static str> {
    let short = series.strip_prefix(&format!("{PREFIX}_"))?;
    FAMILIES.iter().find_map(|f| {
        let matches = short == f.name
            || (f.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| short.strip_suffix(s) == Some(f.name)));
        matches.then_some(f.name)
    })
}

/// Every string literal in `src/` (label values are recorded as literals).
fn literals_in_src() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>, literal: &regex::Regex) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out, literal);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.extend(literal.captures_iter(&text).map(|c| c[1].to_owned()));
            }
        }
    }
    let literal = regex::Regex::new(r#""([A-Za-z_]+)""#).unwrap();
    let mut out = BTreeSet::new();
    walk(&root().join("src"), &mut out, &literal);
    out
}

fn rules() -> Vec<Value> {
    let alerts = yaml("deploy/prometheus/alerts.yaml");
    alerts["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

#[test]
fn alert_rules_use_exported_series_and_recorded_label_values() {
    let series = regex::Regex::new(r"\b(ams_thumbnails_[a-z0-9_]+)").unwrap();
    let matcher = regex::Regex::new(r#"\b(outcome|cause|op)\s*(=~|=|!=|!~)\s*"([^"]*)""#).unwrap();
    let literals = literals_in_src();
    let rules = rules();
    assert!(rules.len() >= 6, "{rules:?}");
    let mut used = BTreeSet::new();
    for rule in &rules {
        let alert = str_of(rule, "alert");
        assert!(alert.starts_with("AmsThumbnails"), "{alert}");
        let expr = str_of(rule, "expr");
        for c in series.captures_iter(expr) {
            let family = family_of(&c[1]);
            assert!(family.is_some(), "{alert}: {} is not exported", &c[1]);
            used.insert(family.unwrap());
        }
        for c in matcher.captures_iter(expr) {
            for value in c[3].split('|') {
                assert!(
                    literals.contains(value),
                    "{alert}: {}=\"{value}\" is never recorded",
                    &c[1]
                );
            }
        }
        assert!(!str_of(rule, "for").is_empty(), "{alert}: for");
        assert!(
            ["warning", "critical"].contains(&str_of(&rule["labels"], "severity")),
            "{alert}: severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                str_of(&rule["annotations"], annotation).len() > 20,
                "{alert}: {annotation}"
            );
        }
    }
    // What the brief of each alert is about.
    for family in [
        "upstream_requests_total",
        "http_requests_shed_total",
        "cache_stale_served_total",
        "cache_refresh_failures_total",
        "cache_bytes",
        "cache_max_bytes",
        "shared_cache_errors_total",
    ] {
        assert!(used.contains(family), "no alert on {family}");
    }
}

#[test]
fn every_alert_has_a_promtool_test_that_fires_it_and_one_that_does_not() {
    let tests = yaml("deploy/prometheus/alerts.test.yaml");
    assert_eq!(tests["rule_files"][0].as_str(), Some("alerts.yaml"));
    // alert -> (fired, stayed quiet)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for input in test["input_series"].as_sequence().unwrap() {
            let series = str_of(input, "series");
            let name = series.split('{').next().unwrap();
            assert!(
                family_of(name).is_some(),
                "test input {name} is not exported"
            );
        }
        for case in test["alert_rule_test"].as_sequence().unwrap() {
            let entry = cases
                .entry(str_of(case, "alertname").to_owned())
                .or_default();
            let expected = case["exp_alerts"].as_sequence().unwrap();
            if expected.is_empty() {
                entry.1 = true;
            } else {
                entry.0 = true;
                for alert in expected {
                    assert!(alert["exp_annotations"]["summary"].is_string(), "{alert:?}");
                }
            }
        }
    }
    for rule in rules() {
        let alert = str_of(&rule, "alert");
        assert_eq!(
            cases.get(alert),
            Some(&(true, true)),
            "{alert}: a test where it fires and one where it does not"
        );
    }
}

#[test]
fn kubernetes_probes_name_real_routes_and_the_pod_runs_as_the_image_user() {
    let text =
        std::fs::read_to_string(root().join("deploy/kubernetes/base/deployment.yaml")).unwrap();
    let deployment: Value = serde_yaml::from_str(&text).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    let (_, state, _) = crate::support::app_with_probe(crate::support::settings(""));
    let routes = ams_thumbnails::http::route_table(&state);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = str_of(&container[probe]["httpGet"], "path");
        assert!(
            routes.iter().any(|(m, p)| m == "GET" && p == path),
            "{probe}: GET {path} is not a route"
        );
    }
    assert_eq!(
        str_of(&container["readinessProbe"]["httpGet"], "path"),
        "/readyz"
    );

    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile USER");
    let uid: u64 = user.split(':').next().unwrap().trim().parse().unwrap();
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(uid));
    let exposed = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("Dockerfile EXPOSE");
    let http = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap();
    assert_eq!(
        http["containerPort"].as_u64().map(|p| p.to_string()),
        Some(exposed.trim().to_owned())
    );
}
