//! Several nodes on one Postgres and one Redis, as separate processes: routing, ordering,
//! failover, drain, fencing, and recovery from Redis and Postgres outages.

mod campaigns;
mod channels;
mod failover;
mod outages;
mod routing;
mod sign_in;
mod support;
mod widget;
