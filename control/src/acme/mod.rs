//! Automated Certificate Management: the ACME (RFC 8555) manager that
//! obtains and renews a certificate for every custom domain of the apps
//! that enabled it (`heroku certs:auto:enable`), as Heroku ACM and Caddy do.
//!
//! # The life of a domain
//!
//! A domain's state is [`DomainAcm`] in its record, so every control node
//! and `heroku certs:auto` see the same thing:
//!
//! - `pending` (enabled, added, refreshed): ordered now;
//! - `cert issued`: its certificate is an SNI endpoint with `acm: true`,
//!   published to routers like an uploaded one; it is ordered again at two
//!   thirds of its lifetime ([`renew_at`]);
//! - `failing`: the last order failed (the CA's reason is in
//!   `acm_status_reason` and in the app's log as `heroku[acm]`); tried again
//!   after a back-off that doubles per attempt ([`backoff`]);
//! - `failed`: [`AcmeSettings::max_attempts`] orders failed in a row; left
//!   alone until `heroku certs:auto:refresh`.
//!
//! A renewal that fails keeps serving the certificate it would replace.
//! Disabling ACM forgets the states but keeps the certificates.
//!
//! # HTTP-01
//!
//! One order per domain (a domain that cannot validate does not hold back
//! the others). The challenge's token and key authorization are committed
//! into the domain's record; `routes/<app>` carries them to every router,
//! which answers `GET /.well-known/acme-challenge/<token>` on plain HTTP
//! before any app routing. The challenge is removed when the order ends.
//!
//! # One orderer per certificate
//!
//! Before ordering, a manager claims the domain in the store (`orderer`,
//! `claimed_until` in [`DomainAcm`]) through the store's compare-and-swap:
//! with several control nodes on etcd, only the node whose claim committed
//! orders that certificate; a claim left by a node that died (or was
//! restarted mid-order) lapses once the longest an order may take
//! ([`AcmeSettings::order_timeout`]) has passed, plus [`CLAIM_MARGIN`].
//!
//! The account key lives in the store (`acme/account`), one per CA
//! directory, so every node orders with the same account.
//!
//! # Layout
//! - [`schedule`]: when each domain is ordered (status, renewal, back-off, plan).
//! - this module: [`AcmeSettings`], [`run`] and the orders themselves.
//!
//! Metrics: `switchyard_acme_orders_total{result="issued"|"failed"}`.

pub mod schedule;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

pub use schedule::{backoff, due, plan, renew_at, status, wanted, Due, Work};

use crate::api::certs::{blank, set_certificate};
use crate::engine::Control;
use crate::error::ApiError;
use crate::model::{
    key, now, uuid, AcmeAccountRecord, AcmeChallenge, AppRecord, CertRecord, DomainAcm,
    DomainRecord,
};
use schedule::{acm_cert, at};

/// Let's Encrypt's production directory (the default).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How long a claim outlives the order timeout: an order cannot run
/// longer than the timeout, so a claim past it is a dead node's.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// The longest the manager sleeps without looking again.
const IDLE: Duration = Duration::from_secs(3600);

/// How the manager talks to the CA and how hard it tries.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The CA's directory URL.
    pub directory: String,
    /// A PEM root to trust for the CA's HTTPS instead of the web PKI's
    /// (a test CA such as pebble).
    pub ca_root: Option<PathBuf>,
    /// Back-off after the first failed order; it doubles per attempt.
    pub retry_after: Duration,
    /// Failed orders in a row before a domain is `failed`.
    pub max_attempts: u32,
    /// How long to wait for the CA to validate and issue one order.
    pub order_timeout: Duration,
    /// How long routers need to pick up a committed challenge before the
    /// CA is told to look: zero when the only router is in this process
    /// (publication is synchronous), a few seconds when routers follow a
    /// shared store.
    pub propagation: Duration,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        AcmeSettings {
            directory: LETS_ENCRYPT.into(),
            ca_root: None,
            retry_after: Duration::from_secs(60),
            max_attempts: 3,
            order_timeout: Duration::from_secs(90),
            propagation: Duration::ZERO,
        }
    }
}

/// Runs the manager until `shutdown`: orders what is due, then sleeps
/// until the next due time or the next committed change.
pub async fn run(
    control: Arc<Control>,
    settings: AcmeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let manager = Manager {
        control,
        settings,
        me: uuid(),
        account: tokio::sync::Mutex::new(None),
    };
    let mut revisions = manager.control.subscribe();
    tokio::pin!(shutdown);
    loop {
        revisions.borrow_and_update();
        let (work, next) = plan(&manager.control.read(), &manager.me, Utc::now());
        let mut stalled = false;
        for w in &work {
            tokio::select! {
                _ = &mut shutdown => return,
                ok = manager.attempt(w) => stalled |= !ok,
            }
        }
        let wait = if stalled {
            // The store refused what the attempt learned: do not spin.
            manager.settings.retry_after.max(Duration::from_secs(1))
        } else if !work.is_empty() {
            continue;
        } else {
            // A time already past (it passed while planning) is due now.
            next.map_or(IDLE, |t| (t - Utc::now()).to_std().unwrap_or_default())
                .min(IDLE)
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = revisions.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

struct Manager {
    control: Arc<Control>,
    settings: AcmeSettings,
    /// This node's name in claims.
    me: String,
    /// The ACME account, once loaded or created; forgotten when the CA
    /// says it does not know it (a CA reset, a deactivated account).
    account: tokio::sync::Mutex<Option<Account>>,
}

/// Why an order failed, in words for `acm_status_reason`.
struct Failure(String);

impl From<instant_acme::Error> for Failure {
    fn from(e: instant_acme::Error) -> Self {
        // The causes too: "client error (Connect)" alone says little.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !why.contains(&cause_text) {
                why = format!("{why}: {cause_text}");
            }
            source = cause.source();
        }
        Failure(why)
    }
}

impl Manager {
    /// Claims, orders and records one domain. False when the store could
    /// not take the outcome.
    async fn attempt(&self, w: &Work) -> bool {
        match self.claim(w).await {
            Ok(true) => {}
            Ok(false) => return true,
            Err(e) => {
                tracing::warn!(host = %w.hostname, error = %e.message, "cannot claim an ACME order");
                return false;
            }
        }
        let outcome = tokio::time::timeout(self.settings.order_timeout, self.order(w))
            .await
            .unwrap_or_else(|_| {
                Err(Failure(format!(
                    "the CA did not validate and issue within {:?}",
                    self.settings.order_timeout
                )))
            });
        if let Err(Failure(why)) = &outcome {
            if why.contains("accountDoesNotExist") {
                self.forget_account().await;
            }
        }
        let result = if outcome.is_ok() { "issued" } else { "failed" };
        metrics::counter!("switchyard_acme_orders_total", "result" => result).increment(1);
        let recorded = match outcome {
            Ok((chain, key)) => self.issued(w, chain, key).await,
            Err(Failure(why)) => self.failed(w, why).await,
        };
        match recorded {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(host = %w.hostname, error = %e.message, "cannot record an ACME order");
                false
            }
        }
    }

    /// Changes domain `w` if it still wants ACM: `f` gets the app, the
    /// domain and its state. Ok(None) when it no longer does (ACM off,
    /// domain removed).
    async fn with_domain<R: Send + 'static>(
        &self,
        w: &Work,
        mut f: impl FnMut(&mut crate::state::Txn<'_>, &AppRecord, &mut DomainRecord) -> R,
    ) -> Result<Option<R>, ApiError> {
        self.control
            .change(|txn| {
                let Some(app) = txn.get::<AppRecord>(&key::app(&w.app_id)) else {
                    return Ok(None);
                };
                let Some(mut d) = txn.get::<DomainRecord>(&key::domain(&w.app_id, &w.domain_id))
                else {
                    return Ok(None);
                };
                if !app.acm || d.acm.is_none() {
                    return Ok(None);
                }
                let before = d.clone();
                let out = f(txn, &app, &mut d);
                // Written only when changed: a claim another node holds
                // writes nothing (and wakes no one).
                if d != before {
                    d.updated_at = now();
                    txn.put(key::domain(&app.id, &d.id), &d);
                }
                Ok(Some(out))
            })
            .await
    }

    /// Claims the domain for this node; false when it is not due any more
    /// (another node got there first, or ACM went off).
    async fn claim(&self, w: &Work) -> Result<bool, ApiError> {
        let me = self.me.clone();
        let claim = self.settings.order_timeout + CLAIM_MARGIN;
        let claimed = self
            .with_domain(w, |txn, app, d| {
                let certs: Vec<CertRecord> = txn.list(&key::under("certs", &app.id));
                let Some(acm) = d.acm.as_mut() else {
                    return false;
                };
                if due(acm, acm_cert(&certs, &d.hostname), &me, Utc::now()) != Due::Now {
                    return false;
                }
                acm.orderer = Some(me.clone());
                acm.claimed_until = Some(at(Utc::now() + claim));
                true
            })
            .await?;
        Ok(claimed == Some(true))
    }

    /// The account, loaded from the store or created (and stored).
    async fn account(&self) -> Result<Account, Failure> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let builder = || match &self.settings.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let stored: Option<AcmeAccountRecord> = self.control.read().get(key::ACME_ACCOUNT);
        if let Some(rec) = stored.filter(|r| r.directory == self.settings.directory) {
            match serde_json::from_value(rec.credentials) {
                Ok(credentials) => {
                    let account = builder()?.from_credentials(credentials).await?;
                    return Ok(cached.insert(account).clone());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stored ACME account does not load; creating another")
                }
            }
        }
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                None,
            )
            .await?;
        let record = AcmeAccountRecord {
            directory: self.settings.directory.clone(),
            credentials: serde_json::to_value(&credentials).map_err(|e| Failure(e.to_string()))?,
            created_at: now(),
        };
        self.control
            .change(|txn| {
                txn.put(key::ACME_ACCOUNT, &record);
                Ok(())
            })
            .await
            .map_err(|e| Failure(format!("cannot store the ACME account: {}", e.message)))?;
        Ok(cached.insert(account).clone())
    }

    /// Forgets an account the CA no longer knows, here and in the store,
    /// so the next order creates another.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        let forgotten = self
            .control
            .change(|txn| {
                txn.delete(key::ACME_ACCOUNT);
                Ok(())
            })
            .await;
        if let Err(e) = forgotten {
            tracing::warn!(error = %e.message, "cannot forget the ACME account");
        }
    }

    /// One order for one name over HTTP-01: the chain and its key (PEM).
    async fn order(&self, w: &Work) -> Result<(String, String), Failure> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(w.hostname.clone())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                Failure("the CA offers no http-01 challenge for this name".into())
            })?;
            let answer = AcmeChallenge {
                token: challenge.token.clone(),
                key_authorization: challenge.key_authorization().as_str().to_string(),
            };
            // Committed (and so published to every router) before the CA
            // is told to look.
            self.with_domain(w, |_, _, d| {
                if let Some(acm) = d.acm.as_mut() {
                    acm.challenge = Some(answer.clone());
                }
            })
            .await
            .map_err(|e| Failure(format!("cannot publish the challenge: {}", e.message)))?
            .ok_or_else(|| Failure("ACM was turned off during the order".into()))?;
            tokio::time::sleep(self.settings.propagation).await;
            challenge.set_ready().await?;
        }
        let poll = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(self.settings.order_timeout);
        let status = order.poll_ready(&poll).await;
        if !matches!(status, Ok(OrderStatus::Ready)) {
            return Err(self.why_invalid(&mut order, status).await);
        }
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&poll).await?;
        Ok((chain, key))
    }

    /// The CA's reason an order did not become ready: a challenge's error
    /// when there is one.
    async fn why_invalid(
        &self,
        order: &mut instant_acme::Order,
        status: Result<OrderStatus, instant_acme::Error>,
    ) -> Failure {
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            if let Ok(state) = authz.refresh().await {
                if let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
                    return Failure(problem.to_string());
                }
            }
        }
        match status {
            Ok(s) => Failure(format!("the order ended {s:?}")),
            Err(e) => e.into(),
        }
    }

    /// Stores the certificate as the domain's ACM SNI endpoint.
    async fn issued(&self, w: &Work, chain: String, key_pem: String) -> Result<(), ApiError> {
        let info = crate::validate::certificate(&chain, &key_pem)?;
        let done = self
            .with_domain(w, |txn, app, d| {
                let certs: Vec<CertRecord> = txn.list(&key::under("certs", &app.id));
                let mut c = acm_cert(&certs, &d.hostname).cloned().unwrap_or_else(|| {
                    blank(format!("acm-{}", d.hostname.replace('.', "-")), true)
                });
                set_certificate(&mut c, &chain, &key_pem, &info);
                txn.put(key::cert(&app.id, &c.id), &c);
                d.sni_endpoint_id = Some(c.id.clone());
                d.acm = Some(DomainAcm {
                    status: status::ISSUED.into(),
                    ..DomainAcm::default()
                });
                c.expires_at.clone()
            })
            .await?;
        if let Some(expires) = done {
            self.log(
                &w.app_id,
                &format!("Certificate issued for {} (expires {expires})", w.hostname),
            );
        }
        Ok(())
    }

    /// Records a failed order: `failing` with a back-off, or `failed`.
    async fn failed(&self, w: &Work, why: String) -> Result<(), ApiError> {
        let settings = &self.settings;
        let line = self
            .with_domain(w, |_, _, d| {
                let Some(acm) = d.acm.as_mut() else {
                    return String::new();
                };
                let attempts = acm.attempts + 1;
                let renewing = acm.status == status::ISSUED;
                let (state, retry_at) = if attempts >= settings.max_attempts {
                    (status::FAILED, None)
                } else {
                    let wait = backoff(settings.retry_after, attempts);
                    (status::FAILING, Some(at(Utc::now() + wait)))
                };
                *acm = DomainAcm {
                    status: state.into(),
                    reason: Some(why.clone()),
                    attempts,
                    retry_at,
                    ..DomainAcm::default()
                };
                let what = if renewing { "renewal" } else { "order" };
                format!(
                    "Certificate {what} for {} failed (attempt {attempts} of {}): {why}",
                    d.hostname, settings.max_attempts
                )
            })
            .await?;
        if let Some(line) = line {
            self.log(&w.app_id, &line);
        }
        Ok(())
    }

    fn log(&self, app_id: &str, message: &str) {
        tracing::info!(app = app_id, "{message}");
        if let Some(logs) = self.control.logs() {
            logs.emit(app_id, "heroku", "acm", message);
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e.message)
    }
}
