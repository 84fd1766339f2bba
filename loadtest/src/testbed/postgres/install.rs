//! Finding the installed PostgreSQL server binaries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{INSTALL_HINT_PG, Result, TestbedError};

/// Environment variable naming the `bin` directory to use instead of searching.
pub const PG_BIN_ENV: &str = "SIDEPOOL_PG_BIN";

/// Where Debian/Ubuntu packages put each major version: `<root>/<version>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The tools a directory must hold to count as a server installation.
const REQUIRED: [&str; 2] = ["postgres", "initdb"];

/// The directory holding `postgres`, `initdb` and the client tools of one installation.
///
/// `$SIDEPOOL_PG_BIN` wins when set (and must hold both binaries); otherwise the newest
/// `/usr/lib/postgresql/<version>/bin` holding both; otherwise the first `$PATH` directory
/// holding both.
///
/// # Errors
/// [`TestbedError::BinariesNotFound`], whose `Display` ends with an install hint.
pub fn pg_bin_dir() -> Result<PathBuf> {
    let forced = std::env::var_os(PG_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    locate(forced, Path::new(DEBIAN_ROOT), std::env::var_os("PATH"))
}

fn locate(forced: Option<PathBuf>, root: &Path, path: Option<OsString>) -> Result<PathBuf> {
    if let Some(dir) = forced {
        return if is_installation(&dir) {
            Ok(dir)
        } else {
            Err(not_found(vec![dir], &format!(" (from ${PG_BIN_ENV})")))
        };
    }
    if let Some(dir) = newest_versioned(root) {
        return Ok(dir);
    }
    let path_dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(dir) = path_dirs.iter().find(|d| is_installation(d)) {
        return Ok(dir.clone());
    }
    let mut looked_in = vec![root.join("*").join("bin")];
    looked_in.extend(path_dirs);
    Err(not_found(looked_in, ""))
}

/// `<root>/<version>/bin` with the highest numeric version that is a full installation.
fn newest_versioned(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = parse_version(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            is_installation(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_installation(dir: &Path) -> bool {
    REQUIRED.iter().all(|tool| dir.join(tool).is_file())
}

fn not_found(looked_in: Vec<PathBuf>, origin: &str) -> TestbedError {
    TestbedError::BinariesNotFound {
        what: format!(
            "PostgreSQL server binaries ({}){origin}",
            REQUIRED.join(", ")
        ),
        looked_in,
        hint: INSTALL_HINT_PG.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_install(root: &Path, version: &str, tools: &[&str]) -> PathBuf {
        let bin = root.join(version).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in tools {
            std::fs::write(bin.join(tool), "").unwrap();
        }
        bin
    }

    #[test]
    fn newest_complete_version_wins_numerically() {
        let root = tempfile::tempdir().unwrap();
        fake_install(root.path(), "9.6", &["postgres", "initdb"]);
        let fifteen = fake_install(root.path(), "15", &["postgres", "initdb"]);
        fake_install(root.path(), "16", &["postgres"]); // client-only leftovers
        fake_install(root.path(), "latest", &["postgres", "initdb"]);
        assert_eq!(locate(None, root.path(), None).unwrap(), fifteen);
    }

    #[test]
    fn env_override_wins_and_is_checked() {
        let root = tempfile::tempdir().unwrap();
        fake_install(root.path(), "15", &["postgres", "initdb"]);
        let custom = fake_install(root.path(), "custom", &["postgres", "initdb"]);
        assert_eq!(
            locate(Some(custom.clone()), root.path(), None).unwrap(),
            custom
        );
        let broken = fake_install(root.path(), "broken", &["initdb"]);
        let err = locate(Some(broken), root.path(), None).unwrap_err();
        assert!(err.to_string().contains(PG_BIN_ENV), "{err}");
    }

    #[test]
    fn path_is_the_last_resort() {
        let root = tempfile::tempdir().unwrap();
        let on_path = fake_install(root.path(), "elsewhere", &["postgres", "initdb"]);
        let empty = root.path().join("none");
        let path = std::env::join_paths([&empty, &on_path]).unwrap();
        assert_eq!(locate(None, &empty, Some(path)).unwrap(), on_path);
    }

    #[test]
    fn nothing_found_names_every_place_and_ends_with_hint() {
        let root = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([root.path().join("a")]).unwrap();
        let err = locate(None, root.path(), Some(path)).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("{}/*/bin", root.path().display())),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("{}/a", root.path().display())),
            "{shown}"
        );
        assert!(shown.ends_with(INSTALL_HINT_PG), "{shown}");
    }
}
