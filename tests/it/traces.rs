//! Traces: the binary, configured by `OTEL_*` variables only (a child process: the environment
//! is the test process' to keep), exports one cold request's spans over OTLP/HTTP (JSON) to a
//! receiver here, under the caller's `traceparent`; Blob Storage (Azurite, behind a recording
//! proxy) receives a `traceparent` of the same trace on every call.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use serde_json::Value;

use crate::support;
use support::azurite::Azurite;
use support::fault_proxy::FaultProxy;
use support::seed::{create_container, put_blob};

const BIN: &str = env!("CARGO_BIN_EXE_ams-thumbnails");
const GUID: &str = "7d0c6a52-3b1e-4f4e-8a61-2c9b5d7e8f10";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: every `POST /v1/traces` body (JSON), kept.
struct Receiver {
    addr: std::net::SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = bodies.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let value: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                    kept.lock().unwrap().push(value);
                    axum::Json(serde_json::json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, bodies }
    }

    /// Every span received, with its resource's attributes.
    fn spans(&self) -> Vec<(Value, Value)> {
        let mut spans = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        spans.push((rs["resource"].clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

/// One exported span, as far as these tests look.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    kind: i64,
    trace: String,
    id: String,
    parent: String,
    /// Nanoseconds since the epoch.
    start: u128,
    attributes: HashMap<String, Value>,
}

impl Span {
    fn from(json: &Value) -> Self {
        let attributes = json["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let value = &kv["value"];
                let value = value
                    .get("stringValue")
                    .or_else(|| value.get("intValue"))
                    .or_else(|| value.get("boolValue"))
                    .or_else(|| value.get("doubleValue"))
                    .cloned()
                    .unwrap_or(Value::Null);
                (kv["key"].as_str().unwrap().to_owned(), value)
            })
            .collect();
        Self {
            name: json["name"].as_str().unwrap().to_owned(),
            kind: json["kind"].as_i64().unwrap_or_default(),
            trace: json["traceId"].as_str().unwrap().to_owned(),
            id: json["spanId"].as_str().unwrap().to_owned(),
            parent: json["parentSpanId"].as_str().unwrap_or_default().to_owned(),
            start: match &json["startTimeUnixNano"] {
                Value::String(s) => s.parse().unwrap(),
                other => other.as_u64().unwrap().into(),
            },
            attributes,
        }
    }

    fn attribute(&self, key: &str) -> String {
        match self.attributes.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }
}

/// The tree under `root`, one span a line, indented by depth (children in order of start).
fn render(spans: &[Span], root: &Span) -> String {
    fn walk(spans: &[Span], span: &Span, depth: usize, out: &mut String) {
        let kind = match span.kind {
            2 => " (server)",
            3 => " (client)",
            _ => "",
        };
        let detail = if span.kind == 3 {
            format!(
                " {} -> {} (resend {})",
                span.attribute("url.full"),
                span.attribute("http.response.status_code"),
                span.attribute("http.request.resend_count"),
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{}{}{kind}{detail}\n",
            "  ".repeat(depth),
            span.name
        ));
        let mut children: Vec<&Span> = spans.iter().filter(|s| s.parent == span.id).collect();
        children.sort_by_key(|s| s.start);
        for child in children {
            walk(spans, child, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, root, 0, &mut out);
    out
}

fn ancestors<'a>(spans: &'a [Span], span: &'a Span) -> Vec<&'a Span> {
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut chain = Vec::new();
    let mut current = span;
    while let Some(parent) = by_id.get(current.parent.as_str()) {
        chain.push(*parent);
        current = parent;
    }
    chain
}

async fn seed(az: &Azurite, container: &str) {
    let client = reqwest::Client::new();
    create_container(&client, az, container, None).await;
    let sample = |name: &str| {
        std::fs::read(support::samples_dir().join("sprite-storyboard").join(name)).unwrap()
    };
    for name in ["Thumbnail000001.jpg", "Thumbnail000002.jpg"] {
        put_blob(&client, az, container, name, &sample(name), "image/jpeg").await;
    }
    put_blob(
        &client,
        az,
        container,
        "forest_sprite.jpg",
        &sample("forest_sprite.jpg"),
        "image/jpeg",
    )
    .await;
    put_blob(
        &client,
        az,
        container,
        "forest_sprite.vtt",
        &sample("forest_sprite.vtt"),
        "text/vtt",
    )
    .await;
}

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars() {
        if key.starts_with("AMS_THUMBNAILS_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_request_is_one_trace_under_the_callers_span_down_to_storage() {
    let az = Azurite::start_http().await;
    let container = format!("asset-{GUID}");
    seed(&az, &container).await;
    let proxy = FaultProxy::start(&az.blob_endpoint).await;
    let receiver = Receiver::start().await;

    let mut child = command()
        .args(["serve", "--config", "config/azurite.toml"])
        .env("AMS_THUMBNAILS_SERVER__LISTEN", "127.0.0.1:0")
        .env("AMS_THUMBNAILS_SERVER__SHUTDOWN_DELAY", "0s")
        .env("AMS_THUMBNAILS_LOG__FORMAT", "json")
        .env(
            "AMS_THUMBNAILS_STORAGE__ENDPOINT",
            proxy.endpoint_template(),
        )
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", receiver.addr),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        // Nothing leaves before shutdown: what arrives was flushed by it.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no listening line:\n{}", lines.join("\n")));
        lines.push(line.clone());
        if line.contains("\"listening\"") {
            let log: Value = serde_json::from_str(&line).unwrap();
            break log["addr"].as_str().unwrap().to_owned();
        }
    };

    let response = reqwest::Client::new()
        .get(format!("http://{addr}/assets/{GUID}/thumbnails"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.text().await.unwrap();
    assert!(answer.contains("sig="), "signed links: {answer}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    lines.extend(lines_rx.try_iter());
    assert!(exit.success(), "{exit:?}\n{}", lines.join("\n"));

    let exported = receiver.spans();
    assert!(!exported.is_empty(), "no spans exported on shutdown");
    let resource = &exported[0].0;
    let resource_attr = |key: &str| {
        resource["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|kv| kv["key"] == key)
            .map(|kv| kv["value"]["stringValue"].clone())
    };
    assert_eq!(resource_attr("service.name"), Some("ams-thumbnails".into()));
    assert_eq!(resource_attr("deployment.environment"), Some("test".into()));
    let spans: Vec<Span> = exported.iter().map(|(_, s)| Span::from(s)).collect();
    let everything = format!("{spans:#?}");

    // The request span continues the caller's trace, as a server span.
    let request = spans
        .iter()
        .find(|s| s.name == "request")
        .unwrap_or_else(|| panic!("no request span: {everything}"));
    assert_eq!(request.trace, CALLER_TRACE);
    assert_eq!(request.parent, CALLER_SPAN);
    assert_eq!(request.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(request.attribute("route"), "/assets/{assetId}/thumbnails");
    assert_eq!(request.attribute("status"), "200");
    let tree = render(&spans, request);
    eprintln!("the span tree of one cold request:\n{tree}");

    // Every span of the request is in the caller's trace, below the request span.
    for name in ["resolve", "load", "locate", "list", "read", "sign"] {
        let span = spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span:\n{tree}"));
        assert_eq!(span.trace, CALLER_TRACE, "{name}");
        assert!(
            ancestors(&spans, span).iter().any(|a| a.id == request.id),
            "{name} is not below the request:\n{tree}"
        );
    }
    let load = spans.iter().find(|s| s.name == "load").unwrap();
    for name in ["locate", "list", "sign"] {
        let span = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(span.parent, load.id, "{name} under load:\n{tree}");
    }

    // One client span per try to Storage, under `list` or `read`, without any query.
    let tries: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    assert!(tries.len() >= 2, "list and read tries:\n{tree}");
    for span in &tries {
        assert_eq!(span.trace, CALLER_TRACE);
        let parent = spans.iter().find(|s| s.id == span.parent).unwrap();
        assert!(
            ["list", "read"].contains(&parent.name.as_str()),
            "{} under {}:\n{tree}",
            span.name,
            parent.name
        );
        let url = span.attribute("url.full");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert!(!url.contains('?'), "no query in a span: {url}");
        let status = span.attribute("http.response.status_code");
        assert!(["200", "206"].contains(&status.as_str()), "{status}");
        assert_eq!(span.attribute("http.request.resend_count"), "0");
        assert_eq!(span.name, span.attribute("http.request.method"));
    }

    // Storage received a traceparent of this trace on every call, naming the try's span.
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    let try_ids: Vec<&str> = tries.iter().map(|s| s.id.as_str()).collect();
    for request in &seen {
        let traceparent = request
            .traceparent
            .as_deref()
            .unwrap_or_else(|| panic!("no traceparent on {request}"));
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[1], CALLER_TRACE, "{traceparent}");
        assert!(
            try_ids.contains(&parts[2]),
            "{traceparent} names a try span"
        );
    }

    // No signature, key or token reached a span.
    let exported_text = serde_json::to_string(&*receiver.bodies.lock().unwrap()).unwrap();
    assert!(!exported_text.contains("sig="), "a SAS in the spans");

    // The log lines of the request carry its trace.
    let finished = lines
        .iter()
        .find(|l| l.contains("finished processing request"))
        .unwrap_or_else(|| panic!("{}", lines.join("\n")));
    let finished: Value = serde_json::from_str(finished).unwrap();
    assert_eq!(finished["trace_id"], CALLER_TRACE);
    assert_eq!(finished["span_id"], request.id.as_str());
}

#[test]
fn an_otel_value_that_cannot_work_stops_start_up_naming_it() {
    let out = command()
        .args(["serve"])
        .env("AMS_THUMBNAILS_SERVER__LISTEN", "127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
}
