//! Every asset of the project as catalog rows (`catalog export --from mkio`): the asset list
//! (`GET .../media/assets`, every `@odata.nextLink` followed), each asset located as `locate`
//! would (its storage instance's account, `container`, `subPath` as the prefix).

use std::collections::HashSet;

use super::{MkioAssetList, MkioCatalog, upstream};
use crate::source::SourceError;
use crate::source::storage::{CatalogRow, ExportPage};

/// List pages followed at most when listing every asset.
const MAX_LIST_PAGES: usize = 100_000;

impl MkioCatalog {
    /// Every asset of the project, page by page: `on_page` sees each page's rows (and the
    /// assets that cannot be served from Azure storage, skipped with why) as they come.
    /// An asset's `storageAccount` is its storage instance's Azure account, or the configured
    /// default account when it names no instance.
    pub async fn export(&self, mut on_page: impl FnMut(ExportPage)) -> Result<(), SourceError> {
        let mut url = self.media_child(&["assets"]);
        let mut seen = HashSet::from([url.to_string()]);
        for page_number in 0..MAX_LIST_PAGES {
            let Some(body) = self.get(&url, "List Assets").await? else {
                return Err(if page_number == 0 {
                    self.misconfigured(&format!(
                        "MK.IO has no project {:?} (404 on its asset list)",
                        self.project
                    ))
                } else {
                    upstream("an @odata.nextLink page is gone (404)")
                });
            };
            let list: MkioAssetList = serde_json::from_slice(&body)
                .map_err(|_| upstream("malformed List Assets answer"))?;
            let mut page = ExportPage::default();
            for asset in list.value {
                let name = asset.name.clone();
                let p = &asset.properties;
                let mut row = CatalogRow {
                    name: name.clone(),
                    alternate_id: p.alternate_id.clone().unwrap_or_default(),
                    asset_id: p.asset_id.clone().unwrap_or_default(),
                    storage_encryption_format: p
                        .storage_encryption_format
                        .clone()
                        .unwrap_or_default(),
                    ..CatalogRow::default()
                };
                match self.location(asset).await {
                    Ok(location) => {
                        row.container = location.container;
                        row.storage_account = location.account;
                        row.prefix = location.prefix;
                        page.rows.push(row);
                    }
                    // This asset's data, not the call: the others are still exported.
                    Err(e @ (SourceError::Unservable { .. } | SourceError::Upstream { .. })) => {
                        page.skipped.push(format!("{name}: {e}"));
                    }
                    Err(e) => return Err(e),
                }
            }
            on_page(page);
            match self.next_page(&url, list.next_link, &mut seen)? {
                Some(next) => url = next,
                None => return Ok(()),
            }
        }
        Err(upstream("too many pages"))
    }
}
