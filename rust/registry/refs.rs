//! Names, references and formats of the registry, validated before anything touches the index.
//!
//! Model and alias names follow `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` and may not contain `..`.
//! Names never become file paths (artifacts are stored by digest), but the rule keeps them
//! portable into URLs, shell commands and file names chosen by other tools.

use crate::error::{CoreError, CoreResult};

/// Longest model, alias, variant or tag name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Every artifact format the registry accepts, with the main model file a directory artifact of
/// that format must contain (`None`: the format names no main file). This is the one list.
pub const FORMATS: &[(&str, Option<&str>)] = &[
    ("onnx", Some("model.onnx")),
    ("torchscript", Some("model.pt")),
    ("ort", Some("model.ort")),
    ("sklearn", None),
    ("pytorch-state-dict", None),
    ("other", None),
];

/// The main file name of a directory artifact of `format`; `InvalidArgument` for an unknown
/// format.
pub fn main_file_of(format: &str) -> CoreResult<Option<&'static str>> {
    FORMATS
        .iter()
        .find(|(name, _)| *name == format)
        .map(|(_, main)| *main)
        .ok_or_else(|| {
            let known: Vec<&str> = FORMATS.iter().map(|(n, _)| *n).collect();
            CoreError::invalid(format!(
                "unknown format {format:?}: expected one of {}",
                known.join(", ")
            ))
        })
}

fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Some("it is longer than 128 characters");
    }
    if name.contains("..") {
        return Some("it contains '..'");
    }
    let mut chars = name.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphanumeric() {
        return Some("it must start with a letter or digit");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Some("only letters, digits, '.', '_' and '-' are allowed");
    }
    None
}

/// Check a model or alias name; `what` ("model name", "alias") starts the error message.
pub fn validate_name(what: &str, name: &str) -> CoreResult<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(why) => Err(CoreError::invalid(format!(
            "invalid {what} {name:?}: {why} (expected [A-Za-z0-9][A-Za-z0-9._-]{{0,127}})"
        ))),
    }
}

/// Check free text used as a key (tag and metric names, variant kinds): non-empty, at most 128
/// characters, no control characters or surrounding whitespace.
pub fn validate_label(what: &str, label: &str) -> CoreResult<()> {
    let why = if label.is_empty() {
        Some("it is empty")
    } else if label.chars().count() > MAX_NAME_LEN {
        Some("it is longer than 128 characters")
    } else if label.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if label.trim() != label {
        Some("it starts or ends with whitespace")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(CoreError::invalid(format!(
            "invalid {what} {label:?}: {why}"
        ))),
    }
}

/// What a reference selects within a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `name`: the latest version that is not archived.
    Latest,
    /// `name:VERSION`.
    Version(i64),
    /// `name@ALIAS`.
    Alias(String),
}

/// A parsed model reference: `name`, `name:VERSION` or `name@ALIAS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub selector: Selector,
}

impl Reference {
    /// Parse and validate a reference; `InvalidArgument` naming the reference when malformed.
    pub fn parse(text: &str) -> CoreResult<Reference> {
        let malformed = |why: &str| {
            CoreError::invalid(format!(
                "malformed model reference {text:?}: {why} (expected NAME, NAME:VERSION or NAME@ALIAS)"
            ))
        };
        let (name, selector) = if let Some((name, version)) = text.split_once(':') {
            if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed("the version must be a positive integer"));
            }
            let v: i64 = version
                .parse()
                .map_err(|_| malformed("the version is too large"))?;
            if v < 1 {
                return Err(malformed("versions start at 1"));
            }
            (name, Selector::Version(v))
        } else if let Some((name, alias)) = text.split_once('@') {
            if let Some(why) = name_problem(alias) {
                return Err(malformed(&format!("alias {alias:?}: {why}")));
            }
            (name, Selector::Alias(alias.to_string()))
        } else {
            (text, Selector::Latest)
        };
        if let Some(why) = name_problem(name) {
            return Err(malformed(&format!("model name {name:?}: {why}")));
        }
        Ok(Reference {
            name: name.to_string(),
            selector,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            Reference::parse("digits").unwrap().selector,
            Selector::Latest
        );
        let r = Reference::parse("digits-mlp.v2:12").unwrap();
        assert_eq!(r.name, "digits-mlp.v2");
        assert_eq!(r.selector, Selector::Version(12));
        assert_eq!(
            Reference::parse("a@production").unwrap().selector,
            Selector::Alias("production".into())
        );
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "a:",
            "a:x",
            "a:0",
            "a:-1",
            "a:+1",
            "a@",
            "a:1@b",
            "a@b:1",
            "@b",
            ":1",
            "a/b",
            "../x",
            "a..b",
            " a",
            "a b",
            "a\n",
            "a@b c",
            "a:99999999999999999999",
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(matches!(err, CoreError::InvalidArgument(_)), "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn validates_names_and_labels() {
        validate_name("model name", &"a".repeat(128)).unwrap();
        for bad in [
            "",
            "..",
            "a/b",
            "-a",
            ".hidden",
            "tab\there",
            "é",
            &"a".repeat(129),
        ] {
            assert!(validate_name("model name", bad).is_err(), "{bad:?}");
        }
        validate_label("tag", "team name").unwrap();
        for bad in ["", " x", "x\u{7}", &"t".repeat(129)] {
            assert!(validate_label("tag", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_have_one_list() {
        assert_eq!(main_file_of("onnx").unwrap(), Some("model.onnx"));
        assert_eq!(main_file_of("other").unwrap(), None);
        let err = main_file_of("pickle").unwrap_err().to_string();
        assert!(
            err.contains("\"pickle\"") && err.contains("torchscript"),
            "{err}"
        );
    }
}
