//! The slash commands people type, parsed, and their `/help` texts. Pure:
//! what a command does is the view's ([`super::view::Chat`]).

/// One typed line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Text for the current window (a channel or a person).
    Text(String),
    /// `/me ACTION`.
    Me(String),
    /// `/join NAME`: join, or switch to a channel one is in.
    Join(String),
    /// `/new NAME`.
    New(String),
    /// `/part [NAME]` or `/leave [NAME]`.
    Part(Option<String>),
    /// `/msg USER TEXT`.
    Msg(String, String),
    /// `/query USER`.
    Query(String),
    /// `/close`: closes a private window.
    Close,
    /// `/names`.
    Names,
    /// `/who`.
    Who,
    /// `/list`.
    List,
    /// `/pull`.
    Pull,
    /// `/acks`.
    Acks,
    /// `/win N`.
    Win(usize),
    /// `/help [COMMAND]`.
    Help(Option<String>),
    /// `/topic`: the protocol has none; answered by its help.
    Topic,
    /// `/quit`.
    Quit,
    /// A command typed wrong: what to show.
    Usage(String),
}

/// Every command: name, arguments, what it does.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("join", "NAME", "join the channel NAME (any that exists, see /list), or switch to it if you are in it"),
    ("new", "NAME", "create the channel NAME and join it"),
    ("part", "[NAME]", "leave the channel NAME (default: the current one); in a private window, close it"),
    ("leave", "[NAME]", "the same as /part"),
    ("msg", "USER TEXT", "send TEXT privately to USER (a name or an account id) and open their window"),
    ("query", "USER", "open a private window with USER: text typed there goes to them"),
    ("close", "", "close the current private window"),
    ("me", "ACTION", "say ACTION in the third person (\"* alice waves\"), sent as the text \"/me ACTION\""),
    ("names", "", "the current channel's members, online and offline, and its leader (CH_WHO)"),
    ("who", "", "every account, online and offline"),
    ("list", "", "every channel, with its leader and health"),
    ("pull", "", "show the current channel's whole history again"),
    ("acks", "", "who acknowledged the last messages of the current window"),
    ("win", "N", "go to window N (also Alt-1..9, Ctrl-N / Ctrl-P for the next / previous window)"),
    ("topic", "", "channels have no topic in this protocol: there is nothing to set or show"),
    ("help", "[COMMAND]", "list the commands, or explain one"),
    ("quit", "", "sign out and end the client (also Ctrl-D on an empty line)"),
];

/// The one-screen help.
pub fn help() -> Vec<String> {
    let mut out = vec!["commands (/help COMMAND for one):".to_owned()];
    for (name, args, what) in COMMANDS {
        let usage = if args.is_empty() { format!("/{name}") } else { format!("/{name} {args}") };
        let short = what.split([':', '(']).next().unwrap_or(what).trim_end();
        out.push(format!("  {usage:<18} {short}"));
    }
    out.push("text without a / goes to the current window's channel or person; //text sends \"/text\"".into());
    out.push("keys: PgUp/PgDn scroll, Up/Down history, Ctrl-A/E/U/W/K edit, Enter or Ctrl-R reconnects at once".into());
    out
}

/// The help of one command.
pub fn help_for(name: &str) -> String {
    let name = name.trim_start_matches('/').to_ascii_lowercase();
    match COMMANDS.iter().find(|(n, _, _)| *n == name) {
        Some((n, "", what)) => format!("/{n}: {what}"),
        Some((n, args, what)) => format!("/{n} {args}: {what}"),
        None => format!("no command /{name}; /help lists them"),
    }
}

fn usage(name: &str) -> Line {
    Line::Usage(format!("usage: {}", help_for(name)))
}

/// Parses one typed line (already known not to be blank).
pub fn parse(line: &str) -> Line {
    let line = line.trim();
    if let Some(text) = line.strip_prefix("//") {
        return Line::Text(format!("/{text}"));
    }
    let Some(command) = line.strip_prefix('/') else { return Line::Text(line.to_owned()) };
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    let one = |make: fn(String) -> Line| if rest.is_empty() { usage(name) } else { make(rest.to_owned()) };
    match name.to_ascii_lowercase().as_str() {
        "join" | "j" => one(Line::Join),
        "new" | "create" => one(Line::New),
        "part" | "leave" => Line::Part((!rest.is_empty()).then(|| rest.to_owned())),
        "msg" | "m" => match rest.split_once(' ') {
            Some((who, text)) if !text.trim().is_empty() => Line::Msg(who.to_owned(), text.trim().to_owned()),
            _ => usage("msg"),
        },
        "query" | "q" => one(Line::Query),
        "close" | "wc" => Line::Close,
        "me" => one(Line::Me),
        "names" => Line::Names,
        "who" => Line::Who,
        "list" => Line::List,
        "pull" => Line::Pull,
        "acks" => Line::Acks,
        "win" | "w" | "window" => match rest.parse() {
            Ok(n) if n > 0 => Line::Win(n),
            _ => usage("win"),
        },
        "topic" => Line::Topic,
        "help" | "h" | "?" => Line::Help((!rest.is_empty()).then(|| rest.to_owned())),
        "quit" | "exit" | "bye" => Line::Quit,
        other => Line::Usage(format!("unknown command /{other}; /help lists the commands")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse("hello"), Line::Text("hello".into()));
        assert_eq!(parse("//etc/passwd is a file"), Line::Text("/etc/passwd is a file".into()));
        assert_eq!(parse("/join #rust"), Line::Join("#rust".into()));
        assert_eq!(parse("/JOIN rust"), Line::Join("rust".into()));
        assert_eq!(parse("/part"), Line::Part(None));
        assert_eq!(parse("/leave rust"), Line::Part(Some("rust".into())));
        assert_eq!(parse("/msg bob  hi there "), Line::Msg("bob".into(), "hi there".into()));
        assert_eq!(parse("/me waves"), Line::Me("waves".into()));
        assert_eq!(parse("/win 3"), Line::Win(3));
        assert_eq!(parse("/help join"), Line::Help(Some("join".into())));
        assert!(matches!(parse("/msg bob"), Line::Usage(u) if u.contains("/msg USER TEXT")));
        assert!(matches!(parse("/join"), Line::Usage(u) if u.contains("/join NAME")));
        assert!(matches!(parse("/win x"), Line::Usage(_)));
        assert!(matches!(parse("/frob"), Line::Usage(u) if u.contains("unknown command /frob")));
    }

    #[test]
    fn every_command_has_help_and_topic_says_there_is_none() {
        for (name, _, _) in COMMANDS {
            assert!(help_for(name).starts_with(&format!("/{name}")), "{name}");
            assert!(help().iter().any(|l| l.contains(&format!("/{name}"))), "{name} in /help");
        }
        assert!(help_for("/topic").contains("no topic"));
        assert!(help_for("nope").contains("no command /nope"));
    }
}
