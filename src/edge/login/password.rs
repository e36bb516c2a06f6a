//! Passwords of `[[users]]`: hashing (argon2id) and checking, a few at a time on
//! their own threads ([`PasswordChecks`]), so a login flood cannot starve the
//! async workers that serve WebSocket handshakes.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::edge::config::User;

/// Most password checks waiting for their turn; beyond, `503` at once.
pub const MAX_QUEUED: usize = 256;

/// Hash a password for `[[users]] password_hash` (argon2id, PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    crate::protocol::random_fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Password checks (argon2, tens of milliseconds of CPU and 19 MiB each) off the
/// async workers, on `concurrent` threads of their own, the rest queued (at most
/// [`MAX_QUEUED`]). So a login flood waits for its turn while WebSocket handshakes
/// keep flowing. Dedicated threads rather than tokio's blocking pool, so the
/// number of threads stays fixed: the pool starts a new thread whenever a check
/// begins before the last one's thread is idle again, and each thread may keep a
/// malloc arena holding argon2's 19 MiB (measured: 516 MB RSS after a flood with
/// the pool, 380 MB with these threads).
#[derive(Debug)]
pub struct PasswordChecks {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// One password check and where its answer goes.
struct Job {
    users: Arc<[User]>,
    email: String,
    password: String,
    answer: tokio::sync::oneshot::Sender<Result<usize, &'static str>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Too many password checks waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many logins in progress; try again in a moment")]
pub struct Busy;

impl PasswordChecks {
    /// `concurrent` threads checking passwords for `users`; they end when this is
    /// dropped.
    pub fn new(concurrent: u32) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(MAX_QUEUED);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..concurrent.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(e) => e.into_inner().recv(),
                        };
                        let Ok(job) = job else { return };
                        if job.answer.is_closed() {
                            continue; // abandoned while queued
                        }
                        let found =
                            check_password(&job.users, &job.email, &job.password).and_then(|u| {
                                let at = job.users.iter().position(|x| x.email == u.email);
                                at.ok_or("unknown user")
                            });
                        let _ = job.answer.send(found);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a password-check thread: {e}");
            }
        }
        PasswordChecks { jobs }
    }

    /// The index of the user in `users` with this email and password, or why not
    /// (for the log), checked like [`check_password`] on a password-check thread, in
    /// turn.
    pub async fn check(
        &self,
        users: &Arc<[User]>,
        email: &str,
        password: String,
    ) -> Result<Result<usize, &'static str>, Busy> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = Job {
            users: users.clone(),
            email: email.to_string(),
            password,
            answer,
        };
        self.jobs.try_send(job).map_err(|_| Busy)?;
        answered.await.map_err(|_| Busy)
    }
}

/// The user with this email and password, or why not (for the edge's log, never
/// the page: "unknown user", "unusable password hash", "wrong password"). Unknown
/// users cost the same time as known ones (a dummy hash is checked), so timing
/// does not reveal who exists. Slow on purpose: call it through [`PasswordChecks`]
/// on a server.
pub fn check_password<'a>(
    users: &'a [User],
    email: &str,
    password: &str,
) -> Result<&'a User, &'static str> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let email = email.trim().to_ascii_lowercase();
    let user = users.iter().find(|u| u.email == email);
    let hash = match user {
        Some(u) => u.password_hash.expose().to_string(),
        None => DUMMY
            .get_or_init(|| hash_password("dummy password").unwrap_or_default())
            .clone(),
    };
    let verified = PasswordHash::new(&hash).map(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    });
    match (user, verified) {
        (None, _) => Err("unknown user"),
        (Some(_), Err(_)) => Err("unusable password hash in the config"),
        (Some(_), Ok(false)) => Err("wrong password"),
        (Some(u), Ok(true)) => Ok(u),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let users = vec![User {
            email: "a@b.test".into(),
            password_hash: Secret::new(h),
        }];
        assert!(check_password(&users, "A@b.test", "pw").is_ok());
        assert_eq!(
            check_password(&users, "a@b.test", "nope").err(),
            Some("wrong password")
        );
        assert_eq!(
            check_password(&users, "x@b.test", "pw").err(),
            Some("unknown user")
        );
    }

    #[tokio::test]
    async fn checks_run_off_the_async_workers_and_abandoned_ones_leave_the_queue() {
        let h = hash_password("pw").unwrap();
        let users: Arc<[User]> = vec![User {
            email: "a@b.test".into(),
            password_hash: Secret::new(h),
        }]
        .into();
        let checks = PasswordChecks::new(1);
        // Requests that give up at once, many more than the queue holds.
        for _ in 0..MAX_QUEUED * 2 {
            let wait = checks.check(&users, "a@b.test", "pw".into());
            let _ = tokio::time::timeout(std::time::Duration::ZERO, wait).await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let answer = loop {
            match checks.check(&users, "a@b.test", "pw".into()).await {
                Err(Busy) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                other => break other,
            }
        };
        assert_eq!(answer, Ok(Ok(0)));
        assert_eq!(
            checks.check(&users, "a@b.test", "no".into()).await,
            Ok(Err("wrong password"))
        );
    }
}
