//! `sigil serve --config FILE`: a TOML file whose keys are `serve`'s long flag
//! names (`max-payload = 65536`, `web = "127.0.0.1:7071"`, `no-web = true`,
//! `web-origin = ["https://chat.example"]` for a repeatable flag;
//! `addr` for the listen address). Flags on the command line win over the
//! file. The file is turned into the flags it stands for, so the command
//! line's own parser checks every value, and `--help` states every default
//! once.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The `serve` arguments a file may not set: they say which file to read, or
/// ask for the effective configuration.
const NOT_IN_FILE: &[&str] = &["config", "print_config", "help"];

/// What went wrong with a configuration file: always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Toml {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A key that is no `serve` flag, or a value of the wrong kind.
    #[error("the configuration file {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// `argv` with the settings of `serve --config FILE` added as the flags they
/// stand for, before the command line's own (which therefore win). Any other
/// command line comes back as it was.
pub fn expand(command: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    // A command line clap refuses is left for the real parse to report.
    let Ok(matches) = command.clone().try_get_matches_from(&argv) else { return Ok(argv) };
    let Some(("serve", serve)) = matches.subcommand() else { return Ok(argv) };
    let Some(path) = serve.get_one::<std::path::PathBuf>("config") else { return Ok(argv) };
    let Some(serve_cmd) = command.find_subcommand("serve") else { return Ok(argv) };
    let from_file = file_flags(serve_cmd, serve, path)?;
    // Insert right after `serve`: the command line's own flags come after, and win.
    let at = argv.iter().position(|a| a == "serve").map_or(argv.len(), |i| i + 1);
    let mut out = argv[..at].to_vec();
    out.extend(from_file);
    out.extend_from_slice(&argv[at..]);
    Ok(out)
}

/// The flags a file stands for, leaving out those the command line sets.
fn file_flags(serve: &Command, given: &ArgMatches, path: &Path) -> Result<Vec<OsString>, ConfigFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: shown.clone(), source })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Toml { path: shown.clone(), message: e.to_string() })?;
    let key_error = |message: String| ConfigFileError::Key { path: shown.clone(), message };
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && !NOT_IN_FILE.contains(&id.as_str()))
            .ok_or_else(|| key_error(format!("unknown key {key:?} (keys are `sigil serve` flag names)")))?;
        if given.value_source(&id) == Some(ValueSource::CommandLine) {
            continue;
        }
        if let (Some(long), ArgAction::Append) = (arg.get_long(), arg.get_action()) {
            // A repeatable flag: one value or a list of them.
            let items = match value {
                toml::Value::Array(items) => items.clone(),
                single => vec![single.clone()],
            };
            for item in items {
                let toml::Value::String(item) = item else {
                    return Err(key_error(format!("{key}: use a string or a list of strings")));
                };
                flags.push(OsString::from(format!("--{long}")));
                flags.push(OsString::from(item));
            }
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(key_error(format!("{key}: a {} is not a flag value", other.type_str()))),
        };
        // A file that restates a default says nothing (and so asks nothing of
        // the flags a default's flag would require, e.g. tls-listen without TLS).
        if arg.get_default_values().first().is_some_and(|d| d.to_string_lossy() == text) {
            continue;
        }
        match (arg.get_long(), arg.get_action()) {
            (None, _) => positional.push(OsString::from(text)),
            (Some(long), ArgAction::SetTrue) => match value {
                toml::Value::Boolean(true) => flags.push(OsString::from(format!("--{long}"))),
                toml::Value::Boolean(false) => {}
                _ => return Err(key_error(format!("{key}: use true or false"))),
            },
            (Some(long), _) => {
                flags.push(OsString::from(format!("--{long}")));
                flags.push(OsString::from(text));
            }
        }
    }
    flags.extend(positional);
    Ok(flags)
}

/// The effective configuration of `serve` as a file would say it: every
/// setting, from the command line, the file or the default.
pub fn render(serve: &Command, matches: &ArgMatches) -> String {
    let mut out = String::from("# sigil serve: the effective configuration (command line > --config file > default)\n");
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_IN_FILE.contains(&id) || id == "version" {
            continue;
        }
        let key = arg.get_long().map_or_else(|| id.to_owned(), str::to_owned);
        let value = match arg.get_action() {
            ArgAction::SetTrue => toml::Value::Boolean(matches.get_flag(id)),
            ArgAction::Append => match matches.get_raw(id) {
                Some(values) => {
                    toml::Value::Array(values.map(|v| toml::Value::String(v.to_string_lossy().into_owned())).collect())
                }
                None => continue,
            },
            _ => match matches.get_raw(id).and_then(|mut v| v.next()).map(|v| v.to_string_lossy().into_owned()) {
                Some(raw) => typed(&raw),
                None => continue,
            },
        };
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// A flag's text as the TOML value a file would hold.
fn typed(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() && raw.contains('.') => toml::Value::Float(f),
        _ => toml::Value::String(raw.to_owned()),
    }
}
