//! The AMS encoder: Transforms and Jobs of ARM's Encoding API (api-version 2022-07-01) and
//! Assets - CreateOrUpdate (2023-01-01), through the AMS catalog's ARM client.
//!
//! The transform is a `StandardEncoderPreset` with one `JpgImage` or `PngImage` codec (label
//! `Thumbnail`) and, for a sprite, a second `JpgImage` with `spriteColumn` (label `Sprite`; AMS
//! makes sprites as JPEG only), and their formats with the filename pattern
//! `{Basename}_{Label}_{Index}{Extension}`, which the default recognition patterns read back.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use url::Url;

use super::rest::Encoder;
use super::spec::{ImageFormat, ThumbnailSpec};
use crate::asset_id::AssetId;
use crate::source::ams::AmsCatalog;
use crate::source::rest::RestClient;
use crate::source::{AssetRecord, SourceError};

/// The filename pattern of every image and sprite this service asks AMS for.
pub const FILENAME_PATTERN: &str = "{Basename}_{Label}_{Index}{Extension}";

pub struct AmsEncoder {
    catalog: Arc<AmsCatalog>,
    api_version: String,
}

impl AmsEncoder {
    pub fn new(catalog: Arc<AmsCatalog>, transform_api_version: &str) -> Self {
        Self {
            catalog,
            api_version: transform_api_version.to_owned(),
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.catalog.account_url().clone();
        url.path_segments_mut()
            .expect("ARM URLs have paths")
            .extend(segments);
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        url
    }
}

/// The preset for `spec` (Encoding.json `StandardEncoderPreset`).
pub fn preset(spec: &ThumbnailSpec) -> Value {
    let layer = |quality: bool| {
        let mut layer = serde_json::Map::new();
        if let Some(w) = &spec.width {
            layer.insert("width".into(), json!(w));
        }
        if let Some(h) = &spec.height {
            layer.insert("height".into(), json!(h));
        }
        if quality {
            layer.insert("quality".into(), json!(90));
        }
        Value::Object(layer)
    };
    let (image, format) = match spec.format {
        ImageFormat::Jpg => ("#Microsoft.Media.JpgImage", "#Microsoft.Media.JpgFormat"),
        ImageFormat::Png => ("#Microsoft.Media.PngImage", "#Microsoft.Media.PngFormat"),
    };
    let mut codecs = vec![json!({
        "@odata.type": image,
        "label": "Thumbnail",
        "start": spec.start,
        "step": spec.step,
        "range": spec.range,
        "stretchMode": "AutoSize",
        "layers": [layer(spec.format == ImageFormat::Jpg)],
    })];
    let mut formats = vec![json!({ "@odata.type": format, "filenamePattern": FILENAME_PATTERN })];
    if let Some(columns) = spec.sprite_columns {
        codecs.push(json!({
            "@odata.type": "#Microsoft.Media.JpgImage",
            "label": "Sprite",
            "start": spec.start,
            "step": spec.step,
            "range": spec.range,
            "stretchMode": "AutoSize",
            "spriteColumn": columns,
            "layers": [layer(true)],
        }));
        if spec.format != ImageFormat::Jpg {
            formats.push(json!({
                "@odata.type": "#Microsoft.Media.JpgFormat",
                "filenamePattern": FILENAME_PATTERN,
            }));
        }
    }
    json!({
        "@odata.type": "#Microsoft.Media.StandardEncoderPreset",
        "codecs": codecs,
        "formats": formats,
    })
}

#[async_trait]
impl Encoder for AmsEncoder {
    fn backend(&self) -> &'static str {
        "ams"
    }

    fn rest(&self) -> &RestClient {
        self.catalog.rest()
    }

    async fn input(&self, id: &AssetId) -> Result<AssetRecord, SourceError> {
        self.catalog.asset_record(id).await
    }

    fn transform_url(&self, name: &str) -> Url {
        self.url(&["transforms", name])
    }

    fn job_url(&self, transform: &str, name: &str) -> Url {
        self.url(&["transforms", transform, "jobs", name])
    }

    fn asset_url(&self, name: &str) -> Url {
        self.catalog.asset_url(name)
    }

    fn preset(&self, spec: &ThumbnailSpec) -> Value {
        preset(spec)
    }

    /// AMS names the container itself (`asset-{assetId}`).
    fn output_asset_properties(&self, input: &AssetRecord, _container: &str) -> Value {
        let mut properties = json!({ "description": format!("Thumbnails of {}", input.name) });
        if let Some(account) = &input.storage {
            properties["storageAccountName"] = json!(account);
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{GenerateDefaults, GenerateRequest};

    #[test]
    fn the_preset_follows_the_encoding_schema() {
        let spec = ThumbnailSpec::resolve(
            &GenerateRequest {
                format: Some("png".into()),
                sprite_columns: Some(4),
                ..Default::default()
            },
            &GenerateDefaults::default(),
        )
        .unwrap();
        let body = crate::jobs::rest::transform_body(preset(&spec));
        let preset = &body["properties"]["outputs"][0]["preset"];
        assert_eq!(
            preset["@odata.type"],
            "#Microsoft.Media.StandardEncoderPreset"
        );
        assert_eq!(
            preset["codecs"][0]["@odata.type"],
            "#Microsoft.Media.PngImage"
        );
        assert_eq!(
            preset["codecs"][0]["layers"][0],
            json!({"width": "25%", "height": "25%"})
        );
        assert_eq!(preset["codecs"][1]["spriteColumn"], 4);
        assert_eq!(
            preset["codecs"][1]["@odata.type"],
            "#Microsoft.Media.JpgImage"
        );
        let formats: Vec<&str> = preset["formats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["@odata.type"].as_str().unwrap())
            .collect();
        assert_eq!(
            formats,
            ["#Microsoft.Media.PngFormat", "#Microsoft.Media.JpgFormat"]
        );
    }
}
