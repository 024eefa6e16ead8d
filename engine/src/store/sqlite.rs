//! SQLite implementation of the store (being written).

/// The embedded store.
pub struct SqliteStore;
