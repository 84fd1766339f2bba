//! Passwords written into a config file that other users of the machine can read: the warning
//! sidepool logs at startup (this crate does not log; it reports).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::secret::is_pure_reference;
use crate::{Config, Secret, SecretSource};

/// A config file that holds passwords in its own text and is readable by group or others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinePasswordExposure {
    /// The config file.
    pub path: PathBuf,
    /// Its permission bits (`mode & 0o777`).
    pub mode: u32,
    /// `pool/user` of every user whose password is, at least in part, written in the file.
    pub users: Vec<String>,
}

impl Config {
    /// The users whose passwords are written in the file this config was loaded from, if that
    /// file is readable by group or others (`mode & 0o077 != 0`). `None` when no password is
    /// inline, the file is private, the config did not come from a file, or the file can no
    /// longer be inspected.
    pub fn inline_password_exposure(&self) -> Option<InlinePasswordExposure> {
        let users: Vec<String> = self
            .pools
            .iter()
            .flat_map(|p| p.users.iter().map(move |u| (p, u)))
            .filter(|(_, u)| is_inline(&u.password))
            .map(|(p, u)| format!("{}/{}", p.name, u.name))
            .collect();
        if users.is_empty() {
            return None;
        }
        let path = self.source.clone()?;
        // `metadata` follows symlinks: Kubernetes mounts ConfigMap files as links.
        let mode = std::fs::metadata(&path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(InlinePasswordExposure { path, mode, users })
    }
}

/// Whether any of the secret's text is written in the file: a literal password, or a template
/// with literal text around its `${NAME}` references. An empty secret (a `trust` user) is not.
fn is_inline(secret: &Secret) -> bool {
    !secret.expose().is_empty()
        && match secret.source() {
            SecretSource::Inline => true,
            SecretSource::Env(template) => !is_pure_reference(template),
            SecretSource::File(_) => false,
        }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::load_with_env;
    use crate::testutil::{POOL, env};

    fn must_load(dir: &Path, users: &str, mode: u32) -> Config {
        let path = dir.join("sidepool.toml");
        std::fs::write(&path, format!("{POOL}{users}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        load_with_env(&path, &env).unwrap()
    }

    const INLINE: &str = "[[pools.users]]\nname = \"a\"\npassword = \"hunter2\"\n\
                          [[pools.users]]\nname = \"b\"\npassword = \"x-${APP_PASSWORD}\"\n\
                          [[pools.users]]\nname = \"c\"\npassword = \"${APP_PASSWORD}\"\n";

    #[test]
    fn inline_passwords_in_a_world_or_group_readable_file_are_reported_by_user() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let exposure = must_load(dir.path(), INLINE, mode)
                .inline_password_exposure()
                .unwrap_or_else(|| panic!("mode {mode:o} not reported"));
            assert_eq!(exposure.mode, mode);
            assert_eq!(exposure.users, ["app/a", "app/b"]);
            assert_eq!(exposure.path, dir.path().join("sidepool.toml"));
        }
    }

    #[test]
    fn private_file_or_env_only_passwords_are_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let private = must_load(dir.path(), INLINE, 0o600);
        assert_eq!(private.inline_password_exposure(), None);
        let env_only = "[[pools.users]]\nname = \"c\"\npassword = \"${APP_PASSWORD}\"\n";
        let public = must_load(dir.path(), env_only, 0o644);
        assert_eq!(public.inline_password_exposure(), None);
    }

    #[test]
    fn a_config_parsed_from_text_has_no_file_to_expose() {
        let config = crate::testutil::must_parse(&format!("{POOL}{INLINE}"));
        assert_eq!(config.inline_password_exposure(), None);
    }
}
