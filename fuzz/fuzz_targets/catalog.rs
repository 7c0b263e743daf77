//! The storage catalog loader (`StorageCatalog::load`), CSV and JSON.
//!
//! `load` reads a file, so each input is written to a temporary file first: `.json` when it
//! starts (after white space) with `[` or `{`, else `.csv`. A catalog that loads must find
//! every row by its name, as the README promises (names win over GUIDs and alternate ids).
#![no_main]

use ams_thumbnails::asset_id::AssetId;
use ams_thumbnails::source::Catalog;
use ams_thumbnails::source::storage::{StorageCatalog, is_valid_container};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let json = data
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[' || *b == b'{');
    // One file per fuzzing process (libFuzzer may run several at once), removed after each load.
    let path = std::env::temp_dir().join(format!(
        "ams-thumbnails-fuzz-catalog-{}.{}",
        std::process::id(),
        if json { "json" } else { "csv" }
    ));
    std::fs::write(&path, data).expect("write the catalog");
    let loaded = StorageCatalog::load(&path, "defaultaccount");
    let _ = std::fs::remove_file(&path);
    let Ok(catalog) = loaded else {
        return;
    };
    let StorageCatalog::File { rows, .. } = &catalog else {
        panic!("a catalog file loaded as a template");
    };
    for (i, row) in rows.iter().enumerate() {
        assert!(
            is_valid_container(&row.container),
            "row {i}: container {:?}",
            row.container
        );
        let Ok(id) = AssetId::parse(&row.name) else {
            continue;
        };
        // The first row with this name is the one a lookup by name finds.
        let first = rows.iter().position(|r| r.name == row.name).unwrap();
        let location = futures::executor::block_on(catalog.locate(&id))
            .unwrap_or_else(|e| panic!("row {i}: name {:?} not found: {e}", row.name));
        assert_eq!(
            location.container, rows[first].container,
            "row {i}: {:?}",
            row.name
        );
        assert_eq!(
            location.prefix, rows[first].prefix,
            "row {i}: {:?}",
            row.name
        );
    }
});
