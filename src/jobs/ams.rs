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

use super::spec::{ImageFormat, ThumbnailSpec};
use super::{Encoder, InputAsset, Job, JobsError};
use crate::asset_id::AssetId;
use crate::source::SourceError;
use crate::source::ams::AmsCatalog;

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

/// `PUT .../transforms/{name}`: the preset for `spec` (Encoding.json `StandardEncoderPreset`).
pub fn transform_body(spec: &ThumbnailSpec) -> Value {
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
        "properties": {
            "description": "Thumbnails (ams-thumbnails)",
            "outputs": [ {
                "onError": "StopProcessingJob",
                "relativePriority": "Normal",
                "preset": {
                    "@odata.type": "#Microsoft.Media.StandardEncoderPreset",
                    "codecs": codecs,
                    "formats": formats,
                }
            } ]
        }
    })
}

#[async_trait]
impl Encoder for AmsEncoder {
    fn backend(&self) -> &'static str {
        "ams"
    }

    async fn input(&self, id: &AssetId) -> Result<InputAsset, SourceError> {
        let record = self.catalog.asset_record(id).await?;
        Ok(InputAsset {
            name: record.name,
            storage: record.storage_account_name,
        })
    }

    async fn put_transform(&self, name: &str, spec: &ThumbnailSpec) -> Result<(), JobsError> {
        let url = self.url(&["transforms", name]);
        super::put(
            self.catalog.rest(),
            &url,
            &transform_body(spec),
            "put transform",
            "create the transform",
        )
        .await
        .map(drop)
    }

    async fn put_output_asset(
        &self,
        name: &str,
        input: &InputAsset,
        _container: &str,
    ) -> Result<(), JobsError> {
        // AMS names the container itself (`asset-{assetId}`).
        let mut properties = json!({ "description": format!("Thumbnails of {}", input.name) });
        if let Some(account) = &input.storage {
            properties["storageAccountName"] = json!(account);
        }
        super::put(
            self.catalog.rest(),
            &self.catalog.asset_url(name),
            &json!({ "properties": properties }),
            "put asset",
            "create the output asset",
        )
        .await
        .map(drop)
    }

    async fn put_job(
        &self,
        transform: &str,
        name: &str,
        input: &str,
        output: &str,
    ) -> Result<Job, JobsError> {
        let url = self.url(&["transforms", transform, "jobs", name]);
        let body = super::put(
            self.catalog.rest(),
            &url,
            &super::job_body(input, output),
            "put job",
            "submit the job",
        )
        .await?;
        super::parse_job(transform, &body).map_err(|why| {
            JobsError::Source(self.catalog.rest().upstream(&format!("put job: {why}")))
        })
    }

    async fn job(&self, transform: &str, name: &str) -> Result<Option<Job>, JobsError> {
        let url = self.url(&["transforms", transform, "jobs", name]);
        super::get_job(self.catalog.rest(), &url, transform).await
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
        let body = transform_body(&spec);
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
