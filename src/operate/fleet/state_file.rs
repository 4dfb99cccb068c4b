//! The state file: this replica's operator book on disk (`fleet.state_file`), read at start before the
//! router serves anything and written after every change, so a restarted replica (or a restarted
//! fleet) keeps every drain. JSON, one object per cluster with its version; written to a sibling file,
//! synced and renamed over the old one, so a crash leaves the old file or the new one, never half.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::operator_state::{Book, Entry, MAX_ENTRIES, Operator, Version, check_entry};

/// The file's layout version.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    /// The replica that wrote it (for whoever reads the file).
    replica: String,
    clusters: BTreeMap<String, FileEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    state: String,
    #[serde(default)]
    reason: String,
    wall_ms: u64,
    counter: u32,
    origin: String,
    config_enabled: bool,
}

/// What reading the file found.
#[derive(Debug)]
pub enum Loaded {
    /// No file (a first start, or a new volume).
    Missing,
    /// The entries it holds.
    Entries(Vec<(String, Entry)>),
}

/// Reads the file. A file that exists but cannot be read or understood is an error: the caller decides
/// (the router logs it loudly and goes on as without one).
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: File =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a state file: {e}", path.display()))?;
    if file.format != FORMAT {
        return Err(format!("{}: format {} (this router reads {FORMAT})", path.display(), file.format));
    }
    if file.clusters.len() > MAX_ENTRIES {
        return Err(format!("{}: {} clusters (at most {MAX_ENTRIES})", path.display(), file.clusters.len()));
    }
    let mut entries = Vec::with_capacity(file.clusters.len());
    for (cluster, e) in file.clusters {
        let operator = Operator::parse(&e.state)
            .ok_or_else(|| format!("{}: cluster `{cluster}`: unknown state `{}`", path.display(), e.state))?;
        let entry = Entry {
            operator,
            reason: e.reason,
            version: Version { wall_ms: e.wall_ms, counter: e.counter, origin: e.origin.as_str().into() },
            config_enabled: e.config_enabled,
        };
        let entry =
            check_entry(&cluster, entry).map_err(|problem| format!("{}: {problem}", path.display()))?;
        entries.push((cluster, entry));
    }
    Ok(Loaded::Entries(entries))
}

/// Writes `book` to `path` atomically (sibling file, fsync, rename, fsync of the directory); creates
/// the directory when missing.
pub fn save(path: &Path, replica: &str, book: &Book) -> Result<(), String> {
    let file = File {
        format: FORMAT,
        replica: replica.to_owned(),
        clusters: book
            .iter()
            .map(|(cluster, e)| {
                let entry = FileEntry {
                    state: e.operator.as_str().to_owned(),
                    reason: e.reason.clone(),
                    wall_ms: e.version.wall_ms,
                    counter: e.version.counter,
                    origin: e.version.origin.to_string(),
                    config_enabled: e.config_enabled,
                };
                (cluster.to_string(), entry)
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself is durable once the directory is.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trino-router-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saves_and_loads_what_it_saved() {
        let dir = scratch("roundtrip");
        let path = dir.join("nested").join("operator-state.json");
        assert!(matches!(load(&path), Ok(Loaded::Missing)));
        let mut book = Book::default();
        let version = Version { wall_ms: 1_700_000_000_000, counter: 2, origin: "router-0".into() };
        book.offer(
            "blue",
            Entry {
                operator: Operator::Draining,
                reason: "upgrade to 477".into(),
                version,
                config_enabled: true,
            },
        );
        save(&path, "router-0", &book).unwrap();
        let Ok(Loaded::Entries(entries)) = load(&path) else { panic!("{:?}", load(&path)) };
        let mut back = Book::default();
        back.merge(entries.iter().map(|(c, e)| (c.as_str(), e.clone())));
        assert_eq!(back, book);
        let leftovers: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_files_are_errors_naming_the_file() {
        let dir = scratch("broken");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("{",                                                                   "not a state file"),
            (r#"{"format": 2, "replica": "r", "clusters": {}}"#,                      "format 2"),
            (r#"{"format": 1, "replica": "r", "clusters": {"b": {"state": "gone", "wall_ms": 1, "counter": 0, "origin": "r", "config_enabled": true}}}"#, "unknown state `gone`"),
            (r#"{"format": 1, "replica": "r", "clusters": {"b": {"state": "active", "wall_ms": 1, "counter": 0, "origin": "", "config_enabled": true}}}"#, "replica name of 0 bytes"),
        ];
        for (text, expected) in cases {
            std::fs::write(&path, text).unwrap();
            let error = load(&path).unwrap_err();
            assert!(error.contains(expected) && error.contains("state.json"), "{text}: {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
