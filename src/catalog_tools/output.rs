//! Where a catalog goes (a file, written whole and renamed into place, or stdout), in which
//! format, and the progress shown on stderr meanwhile.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::ValueEnum;

use crate::source::storage::{CatalogRow, is_valid_container};

/// The catalog's columns, in order (what `source.catalog` reads).
pub const COLUMNS: [&str; 7] = [
    "name",
    "alternateId",
    "assetId",
    "container",
    "storageAccount",
    "prefix",
    "storageEncryptionFormat",
];

/// A catalog file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A header row, then one row per asset.
    Csv,
    /// An array of objects keyed by the column names.
    Json,
}

/// Where the rows go, and how.
pub struct Output {
    path: Option<PathBuf>,
    format: Format,
}

impl Output {
    /// The format given, else the file's (`.json` -> json), else csv. A file's extension must
    /// agree with its format: `source.catalog` reads a file as JSON by its `.json` extension.
    pub fn new(path: Option<PathBuf>, format: Option<Format>) -> Result<Self, String> {
        let is_json = path.as_ref().is_some_and(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        });
        let format = format.unwrap_or(if is_json { Format::Json } else { Format::Csv });
        if let Some(p) = &path
            && (format == Format::Json) != is_json
        {
            return Err(format!(
                "--output {}: a {} catalog needs a file {} .json (source.catalog reads files \
                 ending in .json as JSON, others as CSV)",
                p.display(),
                if is_json { "CSV" } else { "JSON" },
                if is_json {
                    "not ending in"
                } else {
                    "ending in"
                },
            ));
        }
        Ok(Self { path, format })
    }

    /// The file's path, or "stdout".
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "stdout".into(),
        }
    }

    /// Writes every row: to stdout, or to a temporary file beside the output renamed over it
    /// once complete (a failed run leaves no half catalog behind).
    pub fn write(&self, rows: &[CatalogRow]) -> std::io::Result<()> {
        let bytes = render(rows, self.format)?;
        let Some(path) = &self.path else {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&bytes)?;
            return stdout.flush();
        };
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let written =
            std::fs::write(&partial, &bytes).and_then(|()| std::fs::rename(&partial, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    }
}

/// The catalog's bytes: CSV with its header (also when empty), or a JSON array.
pub fn render(rows: &[CatalogRow], format: Format) -> std::io::Result<Vec<u8>> {
    match format {
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::new());
            writer.write_record(COLUMNS)?;
            for row in rows {
                writer.serialize(row)?;
            }
            writer.into_inner().map_err(|e| e.into_error())
        }
        Format::Json => {
            let mut bytes = serde_json::to_vec_pretty(rows)?;
            bytes.push(b'\n');
            Ok(bytes)
        }
    }
}

/// Why a row cannot go into a catalog the storage source would load, if it cannot.
pub fn unwritable(row: &CatalogRow) -> Option<String> {
    if !is_valid_container(&row.container) {
        return Some(format!("{:?} is not a valid container name", row.container));
    }
    if row.name.is_empty() && row.asset_id.is_empty() && row.alternate_id.is_empty() {
        return Some("no name, assetId or alternateId".into());
    }
    None
}

/// Progress on stderr: one line rewritten in place on a terminal, else a plain line per
/// update (one a page).
pub struct Progress {
    terminal: bool,
    /// The line shown in place, when there is one.
    shown: bool,
}

impl Progress {
    pub fn on_stderr() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    pub fn show(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            // Back to the start of the line, the line, then clear what a longer one left.
            let _ = write!(err, "\r{line}\x1b[K");
            self.shown = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// A line of its own (above the in-place line on a terminal).
    pub fn warn(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.shown {
            let _ = write!(err, "\r\x1b[K");
            self.shown = false;
        }
        let _ = writeln!(err, "ams-thumbnails: {line}");
    }

    /// Ends the in-place line.
    pub fn finish(&mut self) {
        if self.shown {
            let _ = writeln!(std::io::stderr());
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::storage::StorageCatalog;

    fn row(name: &str, container: &str, format: &str) -> CatalogRow {
        CatalogRow {
            name: name.into(),
            alternate_id: format!("alt-{name}"),
            asset_id: "1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B".into(),
            container: container.into(),
            storage_account: "acct".into(),
            prefix: String::new(),
            storage_encryption_format: format.into(),
        }
    }

    #[test]
    fn csv_has_the_columns_in_order_even_when_empty() {
        let text = String::from_utf8(render(&[], Format::Csv).unwrap()).unwrap();
        assert_eq!(
            text,
            "name,alternateId,assetId,container,storageAccount,prefix,storageEncryptionFormat\n"
        );
        let text = String::from_utf8(
            render(&[row("intro, part 1", "asset-a", "None")], Format::Csv).unwrap(),
        )
        .unwrap();
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "\"intro, part 1\",\"alt-intro, part 1\",1B4F8E2A-5C3D-4E6F-9A7B-0C1D2E3F4A5B,asset-a,acct,,None"
        );
    }

    #[test]
    fn json_rows_use_the_column_names() {
        let bytes = render(&[row("intro", "asset-a", "")], Format::Json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&str> = value[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = COLUMNS.to_vec();
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn written_files_load_as_storage_catalogs() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            row("intro", "asset-a1", "None"),
            row("secret", "asset-b2", "MediaStorageClientEncryption"),
        ];
        for name in ["catalog.csv", "catalog.json"] {
            let path = dir.path().join(name);
            let output = Output::new(Some(path.clone()), None).unwrap();
            output.write(&rows).unwrap();
            assert!(!dir.path().join(format!("{name}.partial")).exists());
            let catalog = StorageCatalog::load(&path, "default").unwrap();
            let StorageCatalog::File { rows: read, .. } = catalog else {
                panic!("a file catalog")
            };
            assert_eq!(read, rows, "{name}");
        }
    }

    #[test]
    fn the_format_follows_the_extension_and_must_agree_with_it() {
        let format = |path: Option<&str>, format| {
            Output::new(path.map(PathBuf::from), format).map(|o| o.format)
        };
        assert_eq!(format(None, None), Ok(Format::Csv));
        assert_eq!(format(None, Some(Format::Json)), Ok(Format::Json));
        assert_eq!(format(Some("c.JSON"), None), Ok(Format::Json));
        assert_eq!(format(Some("c.csv"), None), Ok(Format::Csv));
        assert_eq!(format(Some("c.txt"), Some(Format::Csv)), Ok(Format::Csv));
        assert!(format(Some("c.csv"), Some(Format::Json)).is_err());
        assert!(format(Some("c.json"), Some(Format::Csv)).is_err());
    }

    #[test]
    fn rows_the_storage_source_would_refuse_are_named() {
        assert_eq!(unwritable(&row("a", "asset-a", "")), None);
        assert!(unwritable(&row("a", "Bad_Container", "")).is_some());
        let anonymous = CatalogRow {
            container: "asset-a".into(),
            ..CatalogRow::default()
        };
        assert!(unwritable(&anonymous).is_some());
    }
}
