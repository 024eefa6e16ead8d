//! Upper bounds on what an agent definition may configure. They keep arithmetic on the
//! values (deadlines, weights summed, durations) far from overflow and a definition from
//! tying up a node; the README lists them.

/// Session durations and inactivity limits: a year.
pub const MAX_DURATION_SECS: u64 = 366 * 24 * 60 * 60;
pub const MAX_DAILY_SESSIONS: u64 = 1_000_000_000;
pub const MAX_WEIGHT: u32 = 1_000_000;
pub const MAX_BACKEND_TIMEOUT_SECS: f64 = 3600.0;
pub const MAX_CONTEXT_WINDOW: usize = 10_000;
pub const MAX_TOOL_ROUNDS: u32 = 100;
pub const MAX_TEMPERATURE: f32 = 2.0;
