//! The shell's clock: the only place the server reads the time of day
//! (the core is handed `now`).

/// Unix time in seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix time in seconds, with the fraction (for rate buckets).
pub fn now_unix_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
