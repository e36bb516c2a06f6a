//! The browser login: open the app's CLI page, poll the hand-off service for the
//! sealed tokens, and wait (with a spinner) meanwhile; or wait for the other process
//! that is logging in to the same app.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Authenticator, CLOUDFLARE_TRANSFER, MAX_HANDOFF, MAX_POLLS, POLL_TIMEOUT, Source};
use crate::auth::discovery::AppInfo;
use crate::auth::store::LoginLock;
use crate::auth::{AuthError, binding, browser};
use crate::protocol;
use crate::protocol::transfer::KeyPair;
use crate::secret::Secret;

impl Authenticator {
    /// Log in in the browser, or wait for the other process that is logging in to
    /// this app; the tokens are cached at `app_path` and the org token path.
    pub(super) async fn log_in_or_wait(
        &self,
        info: &AppInfo,
        app_path: &Path,
    ) -> Result<(Secret, Source), AuthError> {
        let auth_domain = info.meta.auth_domain.as_str();
        let org_path = self.store.org_token_path(auth_domain);
        let mut shown_other = false;
        loop {
            if let Some(lock) = self.store.try_lock(app_path)? {
                let handoff = self.browser_login(info, &lock).await?;
                let org_fits = crate::auth::jwt::claims(&handoff.org_token)
                    .is_ok_and(|c| binding::org_token_fits(&c, auth_domain));
                if !self.fits(&handoff.app_token, info) || !org_fits {
                    return Err(AuthError::LoginFailed(format!(
                        "the login hand-off holds tokens that {auth_domain} did not issue for {}; nothing was cached",
                        self.cfg.host
                    )));
                }
                self.store.write(&org_path, &handoff.org_token)?;
                self.store.write(app_path, &handoff.app_token)?;
                drop(lock);
                return Ok((Secret::new(handoff.app_token.clone()), Source::Browser));
            }
            // Another process is logging in: wait for its token (or for it to give up).
            if !shown_other {
                shown_other = true;
                let url = self.store.login_url(app_path).unwrap_or_default();
                self.cfg.notice.say(&format!(
                    "Another tunnel process is logging in to {}; waiting for it. {url}",
                    self.cfg.host
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(c) = self.cached_fit(app_path, info)? {
                return Ok((c.token, Source::Cache));
            }
        }
    }

    async fn browser_login(
        &self,
        info: &AppInfo,
        lock: &LoginLock,
    ) -> Result<crate::protocol::transfer::Handoff, AuthError> {
        let keys = KeyPair::generate();
        let id = keys.id();
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let app_url = self.cfg.app_url();
        let redirect = format!("{app_url}?token={}&aud={}", enc(&id), enc(&info.meta.aud));
        let url = format!(
            "{}://{}{}?token={}&aud={}&redirect_url={}&send_org_token=true&edge_token_transfer=true",
            self.cfg.scheme,
            self.cfg.host_header,
            protocol::CLI_PATH,
            enc(&id),
            enc(&info.meta.aud),
            enc(&redirect)
        );
        lock.publish_url(&url);
        self.cfg.notice.say(&format!(
            "Log in to {} in your browser:\n\n    {url}\n\nThe page must show the code {}; log in only if it does.\n",
            self.cfg.host,
            protocol::login_code(&id)
        ));
        if !browser::open(&url) {
            self.cfg.notice.say(
                "No browser could be opened here: open the URL above on any machine; waiting.",
            );
        }
        self.poll_handoff(info, &keys).await
    }

    /// Wait for the hand-off of the login that `keys` asked for, and open it.
    async fn poll_handoff(
        &self,
        info: &AppInfo,
        keys: &KeyPair,
    ) -> Result<crate::protocol::transfer::Handoff, AuthError> {
        let id = keys.id();
        let base = self
            .cfg
            .transfer_url
            .clone()
            .or_else(|| info.meta.transfer_url.clone())
            .unwrap_or_else(|| CLOUDFLARE_TRANSFER.to_string());
        let poll_url = format!("{}/transfer/{id}", base.trim_end_matches('/'));
        let poll_host = reqwest::Url::parse(&poll_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let http = self.client(
            &[self.cfg.host.as_str(), poll_host.as_str()],
            POLL_TIMEOUT + Duration::from_secs(5),
        )?;
        let waiting = Waiting::start(&self.cfg.host, &self.cfg.notice);
        for _ in 0..MAX_POLLS {
            let started = Instant::now();
            let resp = match http.get(&poll_url).send().await {
                Ok(r) => r,
                Err(e) if e.is_timeout() => continue,
                Err(e) => {
                    let context = format!("waiting for the login hand-off at {poll_url}");
                    return Err(crate::auth::network(&context, &e));
                }
            };
            let status = resp.status().as_u16();
            if status == 200 {
                let key = resp
                    .headers()
                    .get("service-public-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        AuthError::LoginFailed("the hand-off has no service-public-key".into())
                    })?;
                let body =
                    crate::auth::read_limited(resp, MAX_HANDOFF, "the login hand-off").await?;
                let body = String::from_utf8_lossy(&body);
                let handoff = keys
                    .open(&body, &key)
                    .map_err(|e| AuthError::LoginFailed(e.to_string()))?;
                waiting.finish("logged in");
                return Ok(handoff);
            }
            if status >= 500 {
                return Err(AuthError::LoginFailed(format!(
                    "the hand-off service answered HTTP {status}"
                )));
            }
            // A service that does not long-poll: don't spin.
            if started.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Err(AuthError::LoginFailed(
            "no login arrived in time; run the command again".into(),
        ))
    }
}

/// A spinner with elapsed time on a terminal; plain lines otherwise.
struct Waiting {
    bar: Option<indicatif::ProgressBar>,
    host: String,
    started: Instant,
    notice: crate::console::Notice,
}

impl Waiting {
    fn start(host: &str, notice: &crate::console::Notice) -> Waiting {
        let bar = notice.is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} waiting for the login to {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_message(host.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            notice.say(&format!("waiting for the login to {host}..."));
        }
        Waiting {
            bar,
            host: host.to_string(),
            started: Instant::now(),
            notice: notice.clone(),
        }
    }

    fn finish(&self, what: &str) {
        let secs = self.started.elapsed().as_secs();
        match &self.bar {
            Some(bar) => bar.finish_with_message(format!("{}: {what}", self.host)),
            None => self
                .notice
                .say(&format!("{}: {what} after {secs} s", self.host)),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.as_ref().filter(|b| !b.is_finished()) {
            bar.abandon();
        }
    }
}
