//! Secrets: a password value that never prints, and `${ENV}` expansion for `password`.

use std::fmt;
use std::path::PathBuf;

/// A password. `Debug` and `Display` print `<redacted>`; only [`Secret::expose`] reveals it.
/// Two secrets are equal when their values are, wherever they came from.
#[derive(Clone)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

/// Where a [`Secret`]'s value came from; none of these reveal the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written literally in the file (or built in code).
    Inline,
    /// `password` containing `${NAME}` references; holds the unexpanded template.
    Env(String),
    /// `password_file`; holds the path that was read.
    File(PathBuf),
}

impl Secret {
    /// A secret written literally.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            source: SecretSource::Inline,
        }
    }

    pub(crate) fn with_source(value: String, source: SecretSource) -> Self {
        Self { value, source }
    }

    /// The secret value. Call it only where the value is needed (authentication), never to log.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the value came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The result of expanding a `password` template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub value: String,
    /// Whether the template referenced any variable (otherwise the password is inline).
    pub referenced: bool,
}

/// Expands `${NAME}` references in `template` with `env`; `$${` stands for a literal `${`, and a
/// `$` not followed by `{` is literal.
///
/// # Errors
/// One message per problem: each unset variable, an unterminated `${`, an invalid name.
pub(crate) fn expand_env(
    template: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, Vec<String>> {
    let mut value = String::new();
    let mut errors = Vec::new();
    let mut referenced = false;
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        value.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            value.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                errors.push("unterminated `${` (write `$${` for a literal `${`)".to_owned());
                rest = "";
                break;
            };
            let name = &body[..end];
            referenced = true;
            if !valid_env_name(name) {
                errors.push(format!(
                    "invalid environment variable name `{name}` in `${{...}}`; \
                     names are letters, digits and `_`, not starting with a digit"
                ));
            } else {
                match env(name) {
                    Some(v) => value.push_str(&v),
                    None => errors.push(format!("environment variable `{name}` is not set")),
                }
            }
            rest = &body[end + 1..];
        } else {
            value.push('$');
            rest = &after[1..];
        }
    }
    value.push_str(rest);
    if errors.is_empty() {
        Ok(Expanded { value, referenced })
    } else {
        Err(errors)
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `template` is nothing but `${NAME}` references, so printing it reveals no secret text.
pub(crate) fn is_pure_reference(template: &str) -> bool {
    let mut rest = template;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix("${") else {
            return false;
        };
        let Some(end) = body.find('}') else {
            return false;
        };
        rest = &body[end + 1..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".to_owned()),
            "B_2" => Some("beta".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn expand_env_replaces_whole_and_embedded_references() {
        let whole = expand_env("${A}", &env).unwrap();
        assert_eq!(
            whole,
            Expanded {
                value: "alpha".into(),
                referenced: true
            }
        );
        let embedded = expand_env("x-${A}-${B_2}$", &env).unwrap();
        assert_eq!(embedded.value, "x-alpha-beta$");
    }

    #[test]
    fn expand_env_treats_double_dollar_brace_as_literal() {
        let out = expand_env("p$${A}$x", &env).unwrap();
        assert_eq!(
            out,
            Expanded {
                value: "p${A}$x".into(),
                referenced: false
            }
        );
    }

    #[test]
    fn expand_env_reports_every_unset_variable_by_name() {
        let errs = expand_env("${NOPE}:${A}:${ALSO_NOPE}", &env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].contains("`NOPE` is not set"));
        assert!(errs[1].contains("`ALSO_NOPE` is not set"));
    }

    #[test]
    fn expand_env_rejects_unterminated_and_invalid_names() {
        assert!(expand_env("${A", &env).unwrap_err()[0].contains("unterminated"));
        assert!(expand_env("${1A}", &env).unwrap_err()[0].contains("invalid"));
        assert!(expand_env("${}", &env).unwrap_err()[0].contains("invalid"));
    }

    #[test]
    fn secret_debug_and_display_redact_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn is_pure_reference_only_for_templates_without_literal_text() {
        assert!(is_pure_reference("${A}"));
        assert!(is_pure_reference("${A}${B}"));
        assert!(!is_pure_reference("x${A}"));
        assert!(!is_pure_reference("plain"));
        assert!(!is_pure_reference(""));
    }
}
