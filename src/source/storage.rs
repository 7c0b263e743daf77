//! Storage-only catalog (AMS retired): asset id -> container, by a template
//! (`asset-{assetId}`) or by a catalog file exported while AMS was alive, so that frontends keep
//! using asset names and alternate ids.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use serde::Deserialize;

use super::{AssetLocation, Catalog, SourceError};
use crate::asset_id::AssetId;
use crate::config::Invalid;

/// One asset of a catalog file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogRow {
    #[serde(default, alias = "Name", alias = "assetName")]
    pub name: String,
    #[serde(
        default,
        alias = "alternateId",
        alias = "AlternateId",
        alias = "alternate_id"
    )]
    pub alternate_id: String,
    #[serde(default, alias = "assetId", alias = "AssetId", alias = "asset_id")]
    pub asset_id: String,
    #[serde(alias = "Container")]
    pub container: String,
    #[serde(
        default,
        alias = "storageAccount",
        alias = "storageAccountName",
        alias = "StorageAccount",
        alias = "storage_account"
    )]
    pub storage_account: String,
    /// Blob-name prefix of the asset inside the container (several assets in one container).
    #[serde(default, alias = "Prefix")]
    pub prefix: String,
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
        Ok(Self::File {
            index,
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
            } => {
                let row = index
                    .get(id.as_str())
                    .or_else(|| index.get(&id.as_str().to_ascii_lowercase()))
                    .map(|&i| &rows[i])
                    .ok_or(SourceError::NotFound)?;
                let mut location = AssetLocation::new(
                    if row.storage_account.is_empty() {
                        account.clone()
                    } else {
                        row.storage_account.clone()
                    },
                    row.container.clone(),
                );
                location.prefix = row.prefix.clone();
                Ok(location)
            }
        }
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

    #[test]
    fn bad_catalogs_are_refused_with_the_row() {
        let rows = parse_csv("name,container\nintro,Bad_Container\n").unwrap();
        let err = StorageCatalog::from_rows(rows, "a").unwrap_err();
        assert!(err.contains("row 1"), "{err}");
        assert!(parse_csv("name,container\nonly-one-field\n").is_err());
        assert!(parse_json("{").is_err());
    }
}
