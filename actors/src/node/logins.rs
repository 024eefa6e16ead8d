//! Sign-in attempts: throttled per account and per client address (an attempt is
//! reserved before the password is checked), and password hashing bounded to the cores
//! so a burst of sign-ins cannot take the node's memory (Argon2 uses 19 MiB a hash).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parley_engine::identity::{hash_password, verify_password, Throttle};
use tokio::sync::Semaphore;

/// Sign-in attempts allowed per account and per address within [`THROTTLE_WINDOW`].
const ACCOUNT_ATTEMPTS: usize = 5;
const ADDRESS_ATTEMPTS: usize = 20;
const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Accounts and addresses tracked at most (each key is at most a few hundred bytes).
const MAX_KEYS: usize = 100_000;
/// Hashes waiting for a core, per core, before more are refused as busy.
const WAITING_PER_CORE: usize = 16;

/// Password work refused because too many hashes wait already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

#[derive(Debug)]
pub struct Logins {
    accounts: Throttle,
    addresses: Throttle,
    /// Verified against when the account does not exist, so an unknown address costs a
    /// hash like a known one does (no timing oracle for which accounts exist). Made on
    /// first use: hashing is deliberately slow.
    dummy_hash: tokio::sync::OnceCell<String>,
    hashing: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Default for Logins {
    fn default() -> Logins {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Logins {
            accounts: Throttle::new(ACCOUNT_ATTEMPTS, THROTTLE_WINDOW, MAX_KEYS),
            addresses: Throttle::new(ADDRESS_ATTEMPTS, THROTTLE_WINDOW, MAX_KEYS),
            dummy_hash: tokio::sync::OnceCell::new(),
            hashing: Semaphore::new(cores),
            waiting: AtomicUsize::new(0),
            max_waiting: cores * WAITING_PER_CORE,
        }
    }
}

/// An attempt counted against an account and an address; given back on success.
pub struct Attempt {
    account: String,
    address: String,
    at: Instant,
}

impl Logins {
    /// Counts an attempt for both keys, or answers how long to wait.
    pub fn reserve(&self, email: &str, address: &str) -> Result<Attempt, Duration> {
        let at = Instant::now();
        let attempt = Attempt {
            account: format!("account:{email}"),
            address: format!("address:{address}"),
            at,
        };
        self.accounts.reserve(&attempt.account, at)?;
        if let Err(wait) = self.addresses.reserve(&attempt.address, at) {
            self.accounts.release(&attempt.account, at);
            return Err(wait);
        }
        Ok(attempt)
    }

    /// The attempt succeeded: the account starts afresh and the address is not charged.
    pub fn succeeded(&self, attempt: Attempt) {
        self.accounts.clear(&attempt.account);
        self.addresses.release(&attempt.address, attempt.at);
    }

    /// The attempt was never made (the node was busy or failed): nothing is charged.
    pub fn give_back(&self, attempt: Attempt) {
        self.accounts.release(&attempt.account, attempt.at);
        self.addresses.release(&attempt.address, attempt.at);
    }

    /// The hash unknown accounts are checked against.
    pub async fn dummy_hash(&self) -> Result<String, Busy> {
        if let Some(h) = self.dummy_hash.get() {
            return Ok(h.clone());
        }
        let hash = self
            .hashing(|| hash_password("not a password anyone has"))
            .await?;
        Ok(self.dummy_hash.get_or_init(|| async { hash }).await.clone())
    }

    /// Checks a password against a hash, on a blocking thread, one per core at a time.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, Busy> {
        let (password, hash) = (password.to_string(), hash.to_string());
        self.hashing(move || verify_password(&password, &hash))
            .await
    }

    /// Hashes a new password, one per core at a time.
    pub async fn hash(&self, password: &str) -> Result<String, Busy> {
        let password = password.to_string();
        self.hashing(move || hash_password(&password)).await
    }

    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let permit = self.hashing.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(work).await.map_err(|_| Busy)
    }
}
