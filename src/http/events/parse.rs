//! An Event Grid delivery, parsed at the edge into what it asks of the service: a subscription
//! validation to answer, or the containers whose blobs changed.
//!
//! Both delivery schemas are read, whatever the media type says of the shape:
//!
//! - the Event Grid schema (`application/json`): an array of `{id, topic, subject, eventType,
//!   eventTime, data, dataVersion, metadataVersion}`;
//! - CloudEvents 1.0 in structured mode, one event (`application/cloudevents+json`) or a batch
//!   (`application/cloudevents-batch+json`): `{specversion, id, source, type, subject, time,
//!   data}`. An event with `specversion` is a CloudEvent.
//!
//! The container comes from the subject (`/blobServices/default/containers/{container}/blobs/
//! {path}`), the account from the topic or source (`.../providers/Microsoft.Storage/
//! storageAccounts/{account}`); a rename also names the container it came from
//! (`data.sourceUrl`). Events of other types are counted and left alone.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

/// Longest validation code echoed (Event Grid's are GUIDs).
const MAX_VALIDATION_CODE: usize = 256;

/// What a delivery asks of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// `Microsoft.EventGrid.SubscriptionValidationEvent`: echo `data.validationCode`.
    Validation { code: String },
    /// Events, and the containers their blobs changed in (each once).
    Changes(Changes),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Events in the delivery, by kind (indexed by [`EventKind::index`]).
    pub counts: [usize; EventKind::ALL.len()],
    pub containers: BTreeSet<Container>,
}

impl Changes {
    pub fn events(&self) -> usize {
        self.counts.iter().sum()
    }
}

/// A container of a storage account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Container {
    pub account: String,
    pub container: String,
}

/// The event types this service tells apart (the rest are `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    BlobCreated,
    BlobDeleted,
    BlobRenamed,
    DirectoryRenamed,
    DirectoryDeleted,
    SubscriptionValidation,
    Other,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::BlobCreated,
        EventKind::BlobDeleted,
        EventKind::BlobRenamed,
        EventKind::DirectoryRenamed,
        EventKind::DirectoryDeleted,
        EventKind::SubscriptionValidation,
        EventKind::Other,
    ];

    fn of(event_type: &str) -> Self {
        match event_type {
            "Microsoft.Storage.BlobCreated" => EventKind::BlobCreated,
            "Microsoft.Storage.BlobDeleted" => EventKind::BlobDeleted,
            "Microsoft.Storage.BlobRenamed" => EventKind::BlobRenamed,
            "Microsoft.Storage.DirectoryRenamed" => EventKind::DirectoryRenamed,
            "Microsoft.Storage.DirectoryDeleted" => EventKind::DirectoryDeleted,
            "Microsoft.EventGrid.SubscriptionValidationEvent" => EventKind::SubscriptionValidation,
            _ => EventKind::Other,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label: the type without its namespace (never a caller's text).
    pub fn label(self) -> &'static str {
        match self {
            EventKind::BlobCreated => "BlobCreated",
            EventKind::BlobDeleted => "BlobDeleted",
            EventKind::BlobRenamed => "BlobRenamed",
            EventKind::DirectoryRenamed => "DirectoryRenamed",
            EventKind::DirectoryDeleted => "DirectoryDeleted",
            EventKind::SubscriptionValidation => "SubscriptionValidation",
            EventKind::Other => "other",
        }
    }

    /// Whether the event changes what a container holds.
    fn changes_blobs(self) -> bool {
        !matches!(self, EventKind::SubscriptionValidation | EventKind::Other)
    }

    /// Whether the event's data names where it came from (`sourceUrl`).
    fn is_rename(self) -> bool {
        matches!(self, EventKind::BlobRenamed | EventKind::DirectoryRenamed)
    }
}

/// The members of either schema this service reads.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    specversion: Option<String>,
    /// CloudEvents.
    #[serde(default, rename = "type")]
    ce_type: Option<String>,
    #[serde(default)]
    source: Option<String>,
    /// Event Grid schema.
    #[serde(default, rename = "eventType")]
    event_type: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBody {
    Batch(Vec<RawEvent>),
    One(RawEvent),
}

/// Why a body is not a delivery (a fixed text: never the caller's bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Delivery {
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let raw: RawBody = serde_json::from_slice(body).map_err(|e| {
            Malformed(match e.classify() {
                serde_json::error::Category::Data => {
                    "the body is not an event or an array of events (an event is a JSON object \
                     whose members have their schema's types)"
                }
                _ => "the body is not JSON",
            })
        })?;
        let events = match raw {
            RawBody::Batch(events) => events,
            RawBody::One(event) => vec![event],
        };
        let mut changes = Changes::default();
        let mut validation = None;
        for event in events {
            let cloud = event.specversion.is_some();
            let (event_type, origin) = if cloud {
                (event.ce_type, event.source)
            } else {
                (event.event_type, event.topic)
            };
            let event_type = event_type.ok_or(Malformed(
                "an event has no type (`eventType`, or `type` in a CloudEvent)",
            ))?;
            if !cloud && event.subject.is_none() {
                return Err(Malformed("an Event Grid event has no subject"));
            }
            let kind = EventKind::of(&event_type);
            changes.counts[kind.index()] += 1;
            if kind == EventKind::SubscriptionValidation {
                validation = Some(validation_code(event.data.as_ref())?);
                continue;
            }
            if !kind.changes_blobs() {
                continue;
            }
            let subject = event
                .subject
                .ok_or(Malformed("a storage event has no subject"))?;
            let container = container_of_subject(&subject).ok_or(Malformed(
                "a storage event's subject is not \
                 /blobServices/default/containers/{container}/blobs/{path}",
            ))?;
            let account = origin
                .as_deref()
                .and_then(account_of_topic)
                .ok_or(Malformed(
                    "a storage event's topic (or source) does not name a storage account \
                 (.../providers/Microsoft.Storage/storageAccounts/{account})",
                ))?;
            if kind.is_rename()
                && let Some(url) = event
                    .data
                    .as_ref()
                    .and_then(|d| d.get("sourceUrl"))
                    .and_then(Value::as_str)
                && let Some(from) = container_of_url(url, &account)
            {
                changes.containers.insert(Container {
                    account: account.clone(),
                    container: from,
                });
            }
            changes.containers.insert(Container {
                account,
                container: container.to_owned(),
            });
        }
        Ok(match validation {
            // A validation comes alone (Event Grid sends the other events after it).
            Some(code) => Delivery::Validation { code },
            None => Delivery::Changes(changes),
        })
    }
}

fn validation_code(data: Option<&Value>) -> Result<String, Malformed> {
    data.and_then(|d| d.get("validationCode"))
        .and_then(Value::as_str)
        .filter(|code| !code.is_empty() && code.len() <= MAX_VALIDATION_CODE)
        .map(str::to_owned)
        .ok_or(Malformed(
            "a subscription validation event has no usable data.validationCode",
        ))
}

/// `/blobServices/default/containers/{container}/blobs/{path}` -> `{container}`.
pub fn container_of_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("/blobServices/default/containers/")?;
    let (container, path) = rest.split_once("/blobs/")?;
    (!container.is_empty() && !container.contains('/') && !path.is_empty()).then_some(container)
}

/// `.../providers/Microsoft.Storage/storageAccounts/{account}[/...]` -> `{account}`, in lower
/// case (as account names are).
pub fn account_of_topic(topic: &str) -> Option<String> {
    let segments: Vec<&str> = topic.split('/').collect();
    segments.windows(3).find_map(|w| {
        (w[0].eq_ignore_ascii_case("Microsoft.Storage")
            && w[1].eq_ignore_ascii_case("storageAccounts")
            && !w[2].is_empty())
        .then(|| w[2].to_ascii_lowercase())
    })
}

/// The container of a blob or DFS URL of `account`: the first path segment of
/// `https://{account}.blob.core.windows.net/{container}/...`, the second of a path-style URL
/// (`http://127.0.0.1:10000/{account}/{container}/...`, the emulator's).
fn container_of_url(url: &str, account: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let mut segments = url.path_segments()?;
    let first = segments.next()?;
    let host_names_account = url
        .host_str()
        .and_then(|h| h.split('.').next())
        .is_some_and(|label| label.eq_ignore_ascii_case(account));
    let container = if host_names_account {
        first
    } else if first.eq_ignore_ascii_case(account) {
        segments.next()?
    } else {
        return None;
    };
    (!container.is_empty()).then(|| container.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct";

    fn changes(body: &str) -> Changes {
        match Delivery::parse(body.as_bytes()).unwrap() {
            Delivery::Changes(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn containers(c: &Changes) -> Vec<(&str, &str)> {
        c.containers
            .iter()
            .map(|c| (c.account.as_str(), c.container.as_str()))
            .collect()
    }

    #[test]
    fn subjects_and_topics() {
        assert_eq!(
            container_of_subject("/blobServices/default/containers/asset-1/blobs/a/b.jpg"),
            Some("asset-1")
        );
        for bad in [
            "",
            "/blobServices/default/containers//blobs/x",
            "/blobServices/default/containers/c",
            "/blobServices/default/containers/c/blobs/",
            "/blobServices/other/containers/c/blobs/x",
        ] {
            assert_eq!(container_of_subject(bad), None, "{bad}");
        }
        assert_eq!(account_of_topic(TOPIC).as_deref(), Some("acct"));
        assert_eq!(
            account_of_topic("/subscriptions/s/resourcegroups/rg/providers/microsoft.storage/storageaccounts/MyAcct")
                .as_deref(),
            Some("myacct")
        );
        assert_eq!(account_of_topic("/subscriptions/s"), None);
        assert_eq!(
            account_of_topic("/providers/Microsoft.Storage/storageAccounts/"),
            None
        );
    }

    #[test]
    fn source_urls_name_their_container() {
        let url = |u: &str| container_of_url(u, "acct");
        assert_eq!(
            url("https://acct.dfs.core.windows.net/fs/dir/file.txt").as_deref(),
            Some("fs")
        );
        assert_eq!(
            url("http://127.0.0.1:10000/acct/box/file.txt").as_deref(),
            Some("box")
        );
        assert_eq!(url("https://other.blob.core.windows.net/fs/x"), None);
        assert_eq!(url("not a url"), None);
    }

    #[test]
    fn both_schemas_map_to_containers_once_each() {
        let event_grid = format!(
            r#"[{{"topic":"{TOPIC}","subject":"/blobServices/default/containers/box/blobs/a.jpg","eventType":"Microsoft.Storage.BlobCreated","id":"1","data":{{}}}},
               {{"topic":"{TOPIC}","subject":"/blobServices/default/containers/box/blobs/b.jpg","eventType":"Microsoft.Storage.BlobDeleted","id":"2"}},
               {{"topic":"{TOPIC}","subject":"/blobServices/default/containers/box/blobs/b.jpg","eventType":"Microsoft.Storage.BlobTierChanged","id":"3"}}]"#
        );
        let c = changes(&event_grid);
        assert_eq!(containers(&c), [("acct", "box")]);
        assert_eq!(c.events(), 3);
        assert_eq!(c.counts[EventKind::BlobCreated.index()], 1);
        assert_eq!(c.counts[EventKind::Other.index()], 1);

        let cloud = format!(
            r#"{{"specversion":"1.0","source":"{TOPIC}","subject":"/blobServices/default/containers/fs/blobs/new","type":"Microsoft.Storage.BlobRenamed","id":"1",
                "data":{{"sourceUrl":"https://acct.dfs.core.windows.net/old/x","destinationUrl":"https://acct.dfs.core.windows.net/fs/new"}}}}"#
        );
        let c = changes(&cloud);
        assert_eq!(containers(&c), [("acct", "fs"), ("acct", "old")]);
        assert_eq!(c.counts[EventKind::BlobRenamed.index()], 1);
        assert_eq!(changes("[]"), Changes::default());
    }

    #[test]
    fn validation_codes_are_echoed() {
        let body = r#"[{"id":"x","topic":"/subscriptions/s","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{"validationCode":"512d38b6"}}]"#;
        assert_eq!(
            Delivery::parse(body.as_bytes()).unwrap(),
            Delivery::Validation {
                code: "512d38b6".into()
            }
        );
        let no_code = body.replace("validationCode", "other");
        assert!(Delivery::parse(no_code.as_bytes()).is_err());
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        let storage = |subject: &str, topic: &str| {
            format!(
                r#"[{{"topic":"{topic}",{subject}"eventType":"Microsoft.Storage.BlobCreated"}}]"#
            )
        };
        for (body, expected) in [
            ("{".to_owned(), "the body is not JSON"),
            ("42".to_owned(), "the body is not an event"),
            (r#"[{"subject":7}]"#.to_owned(), "the body is not an event"),
            (r#"[{"subject":"x"}]"#.to_owned(), "an event has no type"),
            (storage("", TOPIC), "an Event Grid event has no subject"),
            (
                storage(r#""subject":"/containers/x","#, TOPIC),
                "a storage event's subject",
            ),
            (
                storage(
                    r#""subject":"/blobServices/default/containers/c/blobs/x","#,
                    "/subscriptions/s",
                ),
                "a storage event's topic",
            ),
            (
                r#"{"specversion":"1.0","type":"Microsoft.Storage.BlobDeleted","source":"x"}"#
                    .to_owned(),
                "a storage event has no subject",
            ),
        ] {
            let Malformed(why) = Delivery::parse(body.as_bytes()).unwrap_err();
            assert!(why.starts_with(expected), "{body}: {why}");
        }
        // Other types need no storage subject (CloudEvents may have none at all).
        let other =
            r#"{"specversion":"1.0","type":"Contoso.Items.ItemReceived","source":"x","id":"1"}"#;
        assert_eq!(changes(other).counts[EventKind::Other.index()], 1);
    }
}
