//! Who works in a tenant: users with their roles (and operators' schedules), their
//! passwords and sign-in tokens, and the tenant's own settings. No HTTP here: the API
//! checks every route against the roles its table allows.

mod password;
mod records;
mod schedule;
mod throttle;
mod usage;

pub use password::{
    check_password_policy, hash_password, verify_password, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS,
};
pub use records::{AuthToken, Role, SessionUsage, TenantSettings, UsageScope, UserId, UserRecord};
pub use schedule::OperatorSchedule;
pub use throttle::Throttle;
pub use usage::{day_period, month_period};
