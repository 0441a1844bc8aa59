//! SIGHUP for `sigil serve`: re-read what can change while the server runs,
//! and say in the log what changed. The TLS certificate and key are re-read
//! (when TLS is on); with `--config FILE`, the file is read again and the log
//! level and the connection limits (`LiveLimits`) it sets take effect at once,
//! while a change to anything else is logged as needing a restart.

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};
use sigil_server::tls::TlsReloader;
use sigil_server::LiveLimitsHandle;
use tracing_subscriber::reload::Handle;
use tracing_subscriber::{EnvFilter, Registry};

use crate::{config_file, server_config, Cli, ServeArgs};

/// Keys whose change a running server takes at once.
const LIVE_KEYS: &[&str] = &[
    "log-level",
    "max-connections",
    "max-connections-per-ip",
    "connects-per-ip-per-minute",
    "rate",
    "burst",
    "frame-timeout-s",
    "outbound-queue",
    "outbound-bytes",
];

/// SIGHUP, registered before the server listens (`None`: it could not be).
#[cfg(unix)]
pub type HangupSignal = Option<tokio::signal::unix::Signal>;
/// No SIGHUP on this system.
#[cfg(not(unix))]
pub type HangupSignal = ();

/// What SIGHUP reloads.
pub struct Hangup {
    /// The command line as given, to read the file again through it.
    pub argv: Vec<OsString>,
    /// The effective configuration in force, as `--print-config` shows it.
    pub effective: String,
    /// The log filter.
    pub log: Handle<EnvFilter, Registry>,
    /// The TLS certificates, when TLS is on.
    pub tls: Option<TlsReloader>,
    /// The connection limits in force.
    pub limits: LiveLimitsHandle,
}

/// `key = value` lines of a rendered configuration.
fn settings(rendered: &str) -> BTreeMap<&str, &str> {
    rendered.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once(" = ")).collect()
}

impl Hangup {
    /// Waits for SIGHUP and reloads, forever.
    pub async fn run(mut self, hup: HangupSignal) {
        #[cfg(unix)]
        if let Some(mut hup) = hup {
            while hup.recv().await.is_some() {
                self.reload();
            }
        }
        #[cfg(not(unix))]
        let () = hup;
        std::future::pending::<()>().await
    }

    /// One SIGHUP.
    pub fn reload(&mut self) {
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(cert = %tls.cert_path().display(), "TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate"),
            }
        }
        let command = Cli::command();
        let argv = match config_file::expand(&command, self.argv.clone()) {
            Ok(argv) => argv,
            Err(e) => return tracing::error!(error = %e, "configuration not reloaded"),
        };
        let matches = match command.clone().try_get_matches_from(argv) {
            Ok(m) => m,
            Err(e) => return tracing::error!(error = %e.to_string().trim(), "configuration not reloaded"),
        };
        let (Some(serve_cmd), Some(given)) = (command.find_subcommand("serve"), matches.subcommand_matches("serve"))
        else {
            return;
        };
        let args = match ServeArgs::from_arg_matches(given) {
            Ok(a) => a,
            Err(e) => return tracing::error!(error = %e.to_string().trim(), "configuration not reloaded"),
        };
        let new = config_file::render(serve_cmd, given);
        let (before, after) = (settings(&self.effective), settings(&new));
        let mut restart = Vec::new();
        for (key, value) in &after {
            let old = before.get(key).copied().unwrap_or("");
            if old == *value {
                continue;
            }
            if LIVE_KEYS.contains(key) {
                tracing::info!(key, from = old, to = value, "configuration changed");
            } else {
                restart.push(*key);
                tracing::warn!(key, from = old, to = value, "configuration changed: restart to apply");
            }
        }
        let level = args.log_level.clone();
        if before.get("log-level") != after.get("log-level") {
            if let Err(e) = self.log.reload(EnvFilter::new(&level)) {
                tracing::error!(error = %e, "log level not changed");
            }
        }
        self.limits.set(server_config(args).live());
        tracing::info!(restart_needed = restart.len(), "configuration reloaded");
        self.effective = new;
    }
}
