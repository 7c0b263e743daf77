//! The MK.IO encoder: `PUT .../media/transforms/{t}` with a `#MediaKind.ThumbnailGeneratorPreset`
//! (Media API 0.26.14 `ThumbnailGeneratorConfiguration`), `PUT .../media/assets/{name}` and
//! `PUT|GET .../media/transforms/{t}/jobs/{j}`, through the MK.IO catalog's client.
//!
//! Outputs are named by MK.IO: `{BaseFilename}_{Label}{Index}{Extension}` (labels `Thumbnail`
//! and `Sprite`) and the sprite's `{BaseFilename}_{Label}.vtt`, which the default recognition
//! patterns read back.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::rest::Encoder;
use super::spec::{ImageFormat, ThumbnailSpec};
use crate::asset_id::AssetId;
use crate::source::mkio::MkioCatalog;
use crate::source::rest::RestClient;
use crate::source::{AssetRecord, SourceError};
use url::Url;

pub struct MkioEncoder {
    catalog: Arc<MkioCatalog>,
}

impl MkioEncoder {
    pub fn new(catalog: Arc<MkioCatalog>) -> Self {
        Self { catalog }
    }
}

/// The thumbnail preset for `spec`.
pub fn preset(spec: &ThumbnailSpec) -> Value {
    let entry = |format: ImageFormat, label: &str, columns: Option<u32>| {
        let mut entry = json!({
            "format": match format { ImageFormat::Jpg => "Jpeg", ImageFormat::Png => "Png" },
            "start": spec.start,
            "step": spec.step,
            "range": spec.range,
            "label": label,
        });
        if let Some(w) = &spec.width {
            entry["width"] = json!(w);
        }
        if let Some(h) = &spec.height {
            entry["height"] = json!(h);
        }
        if format == ImageFormat::Jpg {
            entry["quality"] = json!(90);
        }
        if let Some(c) = columns {
            entry["spriteColumn"] = json!(c);
        }
        entry
    };
    let mut thumbnails = vec![entry(spec.format, "Thumbnail", None)];
    if let Some(columns) = spec.sprite_columns {
        thumbnails.push(entry(ImageFormat::Jpg, "Sprite", Some(columns)));
    }
    json!({
        "@odata.type": "#MediaKind.ThumbnailGeneratorPreset",
        "thumbnails": thumbnails,
    })
}

#[async_trait]
impl Encoder for MkioEncoder {
    fn backend(&self) -> &'static str {
        "mkio"
    }

    fn rest(&self) -> &RestClient {
        self.catalog.rest()
    }

    async fn input(&self, id: &AssetId) -> Result<AssetRecord, SourceError> {
        self.catalog.asset_record(id).await
    }

    fn transform_url(&self, name: &str) -> Url {
        self.catalog.media_url(&["transforms", name])
    }

    fn job_url(&self, transform: &str, name: &str) -> Url {
        self.catalog
            .media_url(&["transforms", transform, "jobs", name])
    }

    fn asset_url(&self, name: &str) -> Url {
        self.catalog.media_url(&["assets", name])
    }

    fn preset(&self, spec: &ThumbnailSpec) -> Value {
        preset(spec)
    }

    /// `storageAccountName` is required (AssetProperties): the input's storage instance; the
    /// container is ours to name.
    fn output_asset_properties(&self, input: &AssetRecord, container: &str) -> Value {
        let mut properties = json!({
            "container": container,
            "description": format!("Thumbnails of {}", input.name),
        });
        if let Some(storage) = &input.storage {
            properties["storageAccountName"] = json!(storage);
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{GenerateDefaults, GenerateRequest};

    #[test]
    fn the_preset_follows_the_thumbnail_generator_schema() {
        let spec = ThumbnailSpec::resolve(
            &GenerateRequest {
                width: Some("320".into()),
                height: Some("180".into()),
                sprite_columns: Some(10),
                ..Default::default()
            },
            &GenerateDefaults::default(),
        )
        .unwrap();
        let body = crate::jobs::rest::transform_body(preset(&spec));
        let preset = &body["properties"]["outputs"][0]["preset"];
        assert_eq!(preset["@odata.type"], "#MediaKind.ThumbnailGeneratorPreset");
        let thumbnails = preset["thumbnails"].as_array().unwrap();
        assert_eq!(thumbnails.len(), 2);
        assert_eq!(thumbnails[0]["format"], "Jpeg");
        assert_eq!(thumbnails[0]["label"], "Thumbnail");
        assert_eq!(thumbnails[0]["width"], "320");
        assert_eq!(thumbnails[1]["spriteColumn"], 10);
        assert_eq!(thumbnails[1]["label"], "Sprite");
    }
}
