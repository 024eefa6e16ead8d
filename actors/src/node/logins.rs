//! Sign-in attempts: throttled per account and per client address (an attempt is
//! reserved before the password is checked), and password hashing bounded to the cores
//! so a burst of sign-ins cannot take the node's memory (Argon2 uses 19 MiB a hash).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parley_engine::identity::{hash_password, verify_password, Throttle};
use parley_engine::registry::{AttemptAnswer, Registry, RegistryResult};
use tokio::sync::Semaphore;
use uuid::Uuid;

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
    /// Its id in the cluster's counters; None: counted on this node only.
    shared: Option<String>,
}

impl Logins {
    /// Counts an attempt for both keys, or answers how long to wait. In a cluster the
    /// counts are the cluster's (in the registry); if the registry does not answer, this
    /// node's own counts still hold.
    pub async fn reserve(
        &self,
        registry: &dyn Registry,
        email: &str,
        address: &str,
    ) -> Result<Attempt, Duration> {
        let mut attempt = Attempt {
            account: format!("account:{email}"),
            address: format!("address:{address}"),
            at: Instant::now(),
            shared: None,
        };
        if registry.clustered() {
            let id = Uuid::new_v4().simple().to_string();
            match reserve_shared(registry, &attempt, &id).await {
                Ok(Some(answer)) => {
                    attempt.shared = Some(id);
                    return answer.map(|()| attempt);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "sign-in attempts counted on this node only"),
            }
        }
        self.accounts.reserve(&attempt.account, attempt.at)?;
        if let Err(wait) = self.addresses.reserve(&attempt.address, attempt.at) {
            self.accounts.release(&attempt.account, attempt.at);
            return Err(wait);
        }
        Ok(attempt)
    }

    /// The attempt succeeded: the account starts afresh and the address is not charged.
    pub async fn succeeded(&self, registry: &dyn Registry, attempt: Attempt) {
        match &attempt.shared {
            Some(id) => {
                let cleared = registry.clear_attempts(&attempt.account).await;
                let released = registry.release_attempt(&attempt.address, id).await;
                if let Err(e) = cleared.and(released) {
                    tracing::warn!(error = %e, "could not take back a sign-in attempt");
                }
            }
            None => {
                self.accounts.clear(&attempt.account);
                self.addresses.release(&attempt.address, attempt.at);
            }
        }
    }

    /// The attempt was never made (the node was busy or failed): nothing is charged.
    pub async fn give_back(&self, registry: &dyn Registry, attempt: Attempt) {
        match &attempt.shared {
            Some(id) => {
                let account = registry.release_attempt(&attempt.account, id).await;
                let address = registry.release_attempt(&attempt.address, id).await;
                if let Err(e) = account.and(address) {
                    tracing::warn!(error = %e, "could not take back a sign-in attempt");
                }
            }
            None => {
                self.accounts.release(&attempt.account, attempt.at);
                self.addresses.release(&attempt.address, attempt.at);
            }
        }
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

/// Counts the attempt in the cluster: Ok(None) if the registry shares no counts.
async fn reserve_shared(
    registry: &dyn Registry,
    attempt: &Attempt,
    id: &str,
) -> RegistryResult<Option<Result<(), Duration>>> {
    let window = THROTTLE_WINDOW;
    let account = registry
        .reserve_attempt(&attempt.account, id, ACCOUNT_ATTEMPTS as u32, window)
        .await?;
    match account {
        None => return Ok(None),
        Some(AttemptAnswer::Wait(wait)) => return Ok(Some(Err(wait))),
        Some(AttemptAnswer::Counted) => {}
    }
    let address = registry
        .reserve_attempt(&attempt.address, id, ADDRESS_ATTEMPTS as u32, window)
        .await;
    match address {
        Ok(Some(AttemptAnswer::Counted)) => Ok(Some(Ok(()))),
        Ok(Some(AttemptAnswer::Wait(wait))) => {
            registry.release_attempt(&attempt.account, id).await?;
            Ok(Some(Err(wait)))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            registry.release_attempt(&attempt.account, id).await?;
            Err(e)
        }
    }
}
