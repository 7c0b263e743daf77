//! Storage-only catalog (AMS retired): asset id -> container, by a template
//! (`asset-{assetId}`) or by a catalog file exported while AMS was alive, so that frontends keep
//! using asset names and alternate ids.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{AssetLocation, Catalog, SourceError};
use crate::asset_id::AssetId;
use crate::config::Invalid;

/// One asset of a catalog file. Serialized (by `catalog export` and `catalog scan`) with the
/// columns `name,alternateId,assetId,container,storageAccount,prefix,storageEncryptionFormat`;
/// read back by those names and the aliases below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct CatalogRow {
    #[serde(default, alias = "Name", alias = "assetName")]
    pub name: String,
    #[serde(
        default,
        rename(serialize = "alternateId"),
        alias = "alternateId",
        alias = "AlternateId",
        alias = "alternate_id"
    )]
    pub alternate_id: String,
    #[serde(
        default,
        rename(serialize = "assetId"),
        alias = "assetId",
        alias = "AssetId",
        alias = "asset_id"
    )]
    pub asset_id: String,
    #[serde(alias = "Container")]
    pub container: String,
    #[serde(
        default,
        rename(serialize = "storageAccount"),
        alias = "storageAccount",
        alias = "storageAccountName",
        alias = "StorageAccount",
        alias = "storage_account"
    )]
    pub storage_account: String,
    /// Blob-name prefix of the asset inside the container (several assets in one container).
    #[serde(default, alias = "Prefix")]
    pub prefix: String,
    /// AMS's `storageEncryptionFormat` (`None`, `MediaStorageClientEncryption`): any value but
    /// `None` (or empty) means the blobs are encrypted, and the asset is refused as unservable.
    #[serde(
        default,
        rename(serialize = "storageEncryptionFormat"),
        alias = "storageEncryptionFormat",
        alias = "StorageEncryptionFormat",
        alias = "storage_encryption_format"
    )]
    pub storage_encryption_format: String,
}

impl CatalogRow {
    /// Whether the row says the asset's blobs are storage-encrypted (not `None`, not empty).
    pub fn is_encrypted(&self) -> bool {
        let format = self.storage_encryption_format.trim();
        !format.is_empty() && !format.eq_ignore_ascii_case("none")
    }

    /// What an unservable answer calls the asset: its name, else its GUID, else its
    /// alternate id.
    fn label(&self) -> &str {
        [&self.name, &self.asset_id, &self.alternate_id]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// One page of an upstream's assets, as catalog rows (`catalog export`), and the assets left
/// out, each with why (no row could be written for them).
#[derive(Debug, Default)]
pub struct ExportPage {
    pub rows: Vec<CatalogRow>,
    pub skipped: Vec<String>,
}

/// The refusal of a storage-encrypted asset, worded as the AMS source words it.
pub fn unservable(asset: &str, format: &str) -> SourceError {
    SourceError::Unservable {
        reason: format!(
            "asset {asset} uses storage encryption {format}: its blobs are encrypted and cannot be served"
        ),
    }
}

/// How asset ids become containers.
#[derive(Debug)]
pub enum StorageCatalog {
    Template {
        template: String,
        account: String,
    },
    File {
        /// Lookup key -> row index. Names win over GUIDs, which win over alternate ids.
        index: HashMap<String, usize>,
        /// (account, container) -> the rows there (storage events name containers).
        by_container: HashMap<(String, String), Vec<usize>>,
        rows: Vec<CatalogRow>,
        account: String,
    },
}

impl StorageCatalog {
    pub fn template(template: &str, account: &str) -> Self {
        Self::Template {
            template: template.to_owned(),
            account: account.to_owned(),
        }
    }

    /// Loads a CSV (header row) or JSON (array of rows, or `{"assets": [...]}`) catalog.
    pub fn load(path: &Path, account: &str) -> Result<Self, Invalid> {
        let invalid = |message: String| Invalid {
            key: "source.catalog".into(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {}", path.display(), e.kind())))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let rows = if is_json {
            parse_json(&text)
        } else {
            parse_csv(&text)
        }
        .map_err(invalid)?;
        Self::from_rows(rows, account).map_err(invalid)
    }

    pub fn from_rows(rows: Vec<CatalogRow>, account: &str) -> Result<Self, String> {
        let mut index = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if !is_valid_container(&row.container) {
                return Err(format!(
                    "row {}: {:?} is not a valid container name",
                    i + 1,
                    row.container
                ));
            }
            if row.name.is_empty() && row.asset_id.is_empty() && row.alternate_id.is_empty() {
                return Err(format!("row {}: no name, assetId or alternateId", i + 1));
            }
        }
        // Later kinds do not overwrite earlier ones: names first, then GUIDs, then alternate ids.
        for key_of in [
            (|r: &CatalogRow| r.name.clone()) as fn(&CatalogRow) -> String,
            |r| r.asset_id.to_ascii_lowercase(),
            |r| r.alternate_id.clone(),
        ] {
            for (i, row) in rows.iter().enumerate() {
                let key = key_of(row);
                if !key.is_empty() {
                    index.entry(key).or_insert(i);
                }
            }
        }
        let mut by_container: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            by_container
                .entry((row_account(row, account).to_owned(), row.container.clone()))
                .or_default()
                .push(i);
        }
        Ok(Self::File {
            index,
            by_container,
            rows,
            account: account.to_owned(),
        })
    }
}

#[async_trait]
impl Catalog for StorageCatalog {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError> {
        match self {
            StorageCatalog::Template { template, account } => {
                // GUIDs are case-insensitive; AMS named containers with the lower-case form.
                let raw = id.as_str();
                let id_part = match uuid::Uuid::try_parse(raw) {
                    Ok(guid) => guid.hyphenated().to_string(),
                    Err(_) => raw.to_owned(),
                };
                let container = template.replace("{assetId}", &id_part);
                // An id that cannot form a container name cannot name an asset here.
                if !is_valid_container(&container) {
                    return Err(SourceError::NotFound);
                }
                Ok(AssetLocation::new(account.clone(), container))
            }
            StorageCatalog::File {
                index,
                rows,
                account,
                ..
            } => {
                let row = index
                    .get(id.as_str())
                    .or_else(|| index.get(&id.as_str().to_ascii_lowercase()))
                    .map(|&i| &rows[i])
                    .ok_or(SourceError::NotFound)?;
                if row.is_encrypted() {
                    return Err(unservable(
                        row.label(),
                        row.storage_encryption_format.trim(),
                    ));
                }
                let mut location =
                    AssetLocation::new(row_account(row, account), row.container.clone());
                location.prefix = row.prefix.clone();
                Ok(location)
            }
        }
    }

    /// Template: the id part of a container the template makes (`asset-{assetId}` -> the
    /// GUID, in the lower and upper case `locate` accepts). Catalog file: every row of the
    /// container, by name, GUID (as written, lower and upper case) and alternate id.
    fn assets_in(&self, account: &str, container: &str) -> Vec<AssetId> {
        let mut spellings: Vec<String> = Vec::new();
        match self {
            StorageCatalog::Template {
                template,
                account: own,
            } => {
                if own != account {
                    return Vec::new();
                }
                let Some((before, after)) = template.split_once("{assetId}") else {
                    return Vec::new();
                };
                let Some(part) = container
                    .strip_prefix(before)
                    .and_then(|rest| rest.strip_suffix(after))
                    .filter(|part| !part.is_empty())
                else {
                    return Vec::new();
                };
                // `locate` must map the id back to this very container.
                if template.replace("{assetId}", part) != container {
                    return Vec::new();
                }
                spellings.push(part.to_owned());
                if uuid::Uuid::try_parse(part).is_ok() {
                    spellings.push(part.to_ascii_uppercase());
                }
            }
            StorageCatalog::File {
                by_container, rows, ..
            } => {
                let key = (account.to_owned(), container.to_owned());
                for &i in by_container.get(&key).into_iter().flatten() {
                    let row = &rows[i];
                    spellings.push(row.name.clone());
                    spellings.push(row.alternate_id.clone());
                    spellings.push(row.asset_id.clone());
                    spellings.push(row.asset_id.to_ascii_lowercase());
                    spellings.push(row.asset_id.to_ascii_uppercase());
                }
            }
        }
        let mut ids: Vec<AssetId> = Vec::new();
        for spelling in spellings {
            if let Ok(id) = AssetId::parse(&spelling)
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        ids
    }
}

/// A row's storage account: its own, else the configured default.
fn row_account<'a>(row: &'a CatalogRow, default: &'a str) -> &'a str {
    if row.storage_account.is_empty() {
        default
    } else {
        &row.storage_account
    }
}

/// Azure container naming rules: 3-63 characters, lower-case letters, digits and single
/// hyphens, starting and ending with a letter or digit.
pub fn is_valid_container(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--")
}

fn parse_json(text: &str) -> Result<Vec<CatalogRow>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Doc {
        Rows(Vec<CatalogRow>),
        Wrapped { assets: Vec<CatalogRow> },
    }
    match serde_json::from_str::<Doc>(text).map_err(|e| format!("invalid JSON catalog: {e}"))? {
        Doc::Rows(rows) | Doc::Wrapped { assets: rows } => Ok(rows),
    }
}

fn parse_csv(text: &str) -> Result<Vec<CatalogRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    reader
        .deserialize::<CatalogRow>()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| format!("invalid CSV catalog at row {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AssetId {
        AssetId::parse(s).unwrap()
    }

    #[test]
    fn container_rules() {
        for ok in [
            "abc",
            "asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
            &"a".repeat(63),
        ] {
            assert!(is_valid_container(ok), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "a--b",
            "-ab",
            "ab-",
            "a_b",
            "a b",
            &"a".repeat(64),
            "ab/c",
        ] {
            assert!(!is_valid_container(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn template_lower_cases_guids_and_refuses_impossible_names() {
        let c = StorageCatalog::template("asset-{assetId}", "acct");
        let loc = c
            .locate(&id("1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B"))
            .await
            .unwrap();
        assert_eq!(loc.container, "asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b");
        assert_eq!(loc.account, "acct");
        assert!(matches!(
            c.locate(&id("My Video")).await,
            Err(SourceError::NotFound)
        ));
    }

    #[tokio::test]
    async fn csv_and_json_catalogs_find_by_name_guid_and_alternate_id() {
        let csv = "name,alternateId,assetId,container,storageAccount\n\
                   intro,cms-42,1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B,asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b,\n\
                   outro,,22222222-2222-2222-2222-222222222222,asset-2222,otheracct\n";
        let rows = parse_csv(csv).unwrap();
        let c = StorageCatalog::from_rows(rows, "acct").unwrap();
        for key in [
            "intro",
            "cms-42",
            "1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
            "1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B",
        ] {
            let loc = c.locate(&id(key)).await.unwrap();
            assert_eq!(
                loc.container, "asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
                "{key}"
            );
            assert_eq!(loc.account, "acct");
        }
        assert_eq!(c.locate(&id("outro")).await.unwrap().account, "otheracct");
        assert!(matches!(
            c.locate(&id("nope")).await,
            Err(SourceError::NotFound)
        ));

        let json = r#"{"assets":[{"name":"intro","alternateId":"x","assetId":"a","container":"asset-aaa","storageAccountName":"s1"}]}"#;
        let c = StorageCatalog::from_rows(parse_json(json).unwrap(), "acct").unwrap();
        assert_eq!(c.locate(&id("x")).await.unwrap().container, "asset-aaa");
        assert_eq!(c.locate(&id("intro")).await.unwrap().account, "s1");
    }

    fn ids(found: Vec<AssetId>) -> Vec<String> {
        found.iter().map(|id| id.as_str().to_owned()).collect()
    }

    #[test]
    fn template_containers_map_back_to_their_ids() {
        let c = StorageCatalog::template("asset-{assetId}", "acct");
        assert_eq!(
            ids(c.assets_in("acct", "asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b")),
            [
                "1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
                "1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B"
            ]
        );
        assert_eq!(ids(c.assets_in("acct", "asset-intro")), ["intro"]);
        // Another account, a container the template cannot make, an empty id part.
        assert!(c.assets_in("other", "asset-intro").is_empty());
        assert!(c.assets_in("acct", "media").is_empty());
        assert!(c.assets_in("acct", "asset-").is_empty());
        let suffixed = StorageCatalog::template("{assetId}-thumbs", "acct");
        assert_eq!(ids(suffixed.assets_in("acct", "intro-thumbs")), ["intro"]);
        assert!(suffixed.assets_in("acct", "intro").is_empty());
        // No placeholder: every asset shares the one container, known to no id.
        assert!(
            StorageCatalog::template("media", "acct")
                .assets_in("acct", "media")
                .is_empty()
        );
    }

    #[test]
    fn catalog_rows_of_a_container_by_every_id() {
        let csv = "name,alternateId,assetId,container,storageAccount\n\
                   intro,cms-42,1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B,shared,\n\
                   outro,,,shared,\n\
                   elsewhere,,,shared,otheracct\n\
                   alone,,,asset-alone,\n";
        let c = StorageCatalog::from_rows(parse_csv(csv).unwrap(), "acct").unwrap();
        assert_eq!(
            ids(c.assets_in("acct", "shared")),
            [
                "intro",
                "cms-42",
                "1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B",
                "1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
                "outro"
            ]
        );
        assert_eq!(ids(c.assets_in("otheracct", "shared")), ["elsewhere"]);
        assert!(c.assets_in("acct", "nowhere").is_empty());
    }

    #[tokio::test]
    async fn encrypted_rows_are_unservable_by_every_id_as_with_ams() {
        let csv = "name,alternateId,assetId,container,storageAccount,prefix,storageEncryptionFormat\n\
                   clear,c-1,11111111-1111-1111-1111-111111111111,asset-1,,,None\n\
                   plain,,,asset-2,,,\n\
                   ,s-1,33333333-3333-3333-3333-333333333333,asset-3,,,MediaStorageClientEncryption\n";
        let c = StorageCatalog::from_rows(parse_csv(csv).unwrap(), "acct").unwrap();
        for key in ["clear", "c-1", "plain"] {
            assert!(c.locate(&id(key)).await.is_ok(), "{key}");
        }
        for key in ["s-1", "33333333-3333-3333-3333-333333333333"] {
            let Err(SourceError::Unservable { reason }) = c.locate(&id(key)).await else {
                panic!("{key}: unservable expected");
            };
            assert_eq!(
                reason,
                "asset 33333333-3333-3333-3333-333333333333 uses storage encryption \
                 MediaStorageClientEncryption: its blobs are encrypted and cannot be served"
            );
        }
        // Storage events still map the container back to its ids.
        let ids = ids(c.assets_in("acct", "asset-3"));
        assert!(ids.contains(&"s-1".to_owned()), "{ids:?}");
        assert!(
            ids.contains(&"33333333-3333-3333-3333-333333333333".to_owned()),
            "{ids:?}"
        );
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_row() {
        let rows = parse_csv("name,container\nintro,Bad_Container\n").unwrap();
        let err = StorageCatalog::from_rows(rows, "a").unwrap_err();
        assert!(err.contains("row 1"), "{err}");
        assert!(parse_csv("name,container\nonly-one-field\n").is_err());
        assert!(parse_json("{").is_err());
    }
}
