//! The parley server: CLI, configuration, bootstrap and the HTTP/WebSocket API over the
//! actor tree of `parley-actors`.

pub mod api;
pub mod bootstrap;
pub mod cli;
pub mod listen;
pub mod server;
pub mod tree;
