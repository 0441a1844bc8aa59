//! The command and event tables in `sigil-proto` are the one place a command
//! is declared; the fuzzing dictionary and `spec/PROTOCOL.md` must agree with
//! them. Each test prints what the file should contain when it does not.

use sigil_proto::command::{Family, Sender, COMMANDS};
use sigil_proto::event::EVENTS;

fn root(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// §12 of PROTOCOL.md as the tables say it.
fn expected_index() -> String {
    let mut out = String::from("| command | sent by | handled in |\n| --- | --- | --- |\n");
    for c in COMMANDS {
        let sender = match c.sender {
            Sender::Unauthenticated => "before `CNN` succeeded; an error closes the connection",
            Sender::Anyone => "anyone: unsigned before `CNN`, signed after",
            Sender::Authenticated => "an authenticated session",
        };
        let family = match c.family {
            Family::Session => "session start and end",
            Family::Presence => "presence",
            Family::Private => "private messages",
            Family::Channel => "channels",
        };
        out.push_str(&format!("| `{}` | {sender} | {family}: `{}` |\n", c.name, c.family.handler()));
    }
    out.push_str("\nServer events: ");
    let events: Vec<String> = EVENTS.iter().map(|e| format!("`{e}`")).collect();
    out.push_str(&events.join(", "));
    out.push_str(".\n");
    out
}

/// The text between `## 12. Command index`'s first table and the next heading.
fn spec_index(spec: &str) -> String {
    let start = spec.find("## 12. Command index").expect("PROTOCOL.md has no §12 Command index");
    let rest = &spec[start..];
    let table = rest.find("| command |").expect("§12 has no command table");
    let end = rest[table..].find("\n## ").map_or(rest.len(), |e| table + e);
    rest[table..end].trim_end().to_owned() + "\n"
}

#[test]
fn the_spec_command_index_is_the_command_table() {
    let spec = root("spec/PROTOCOL.md");
    let expected = expected_index();
    assert_eq!(spec_index(&spec), expected, "PROTOCOL.md §12 should read:\n\n{expected}");
}

#[test]
fn every_command_the_spec_tables_name_is_in_the_table_and_the_other_way_round() {
    let spec = root("spec/PROTOCOL.md");
    let body = &spec[..spec.find("## 12. Command index").expect("§12")];
    // First cells of the spec's tables in §3 to §7 name commands and events.
    let start = body.find("## 3. ").expect("§3");
    let end = body.find("## 8. ").expect("§8");
    let mut named = std::collections::BTreeSet::new();
    for line in body[start..end].lines() {
        let Some(cell) = line.strip_prefix("| `") else { continue };
        let Some(name) = cell.split('`').next() else { continue };
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            named.insert(name.to_owned());
        }
    }
    let known: std::collections::BTreeSet<String> =
        COMMANDS.iter().map(|c| c.name.to_owned()).chain(EVENTS.iter().map(|e| (*e).to_owned())).collect();
    let unknown: Vec<&String> = named.difference(&known).collect();
    assert!(unknown.is_empty(), "PROTOCOL.md documents commands the tables lack: {unknown:?}");
    for name in &known {
        assert!(body[start..end].contains(&format!("`{name}`")), "PROTOCOL.md §3–§7 never documents `{name}`");
    }
}

#[test]
fn the_fuzzing_dictionary_is_derived_from_the_tables() {
    let expected = sigil_fuzzing::dictionary();
    assert_eq!(root("fuzz/sigil.dict"), expected, "fuzz/sigil.dict should read:\n\n{expected}");
}
