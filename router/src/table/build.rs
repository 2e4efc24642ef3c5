//! Making tables: a whole one from a builder, or the next one from a
//! change ([`TableUpdate`]). Both put apps in with the same code, so an
//! update and a rebuild of the same apps cannot answer differently.

use std::collections::HashMap;
use std::sync::Arc;

use super::{App, AppSpec, Dyno, Entry, RouteTable, TableError};
use crate::tls::{CertSpec, Certs};

/// One control-plane commit's change to the published table, for
/// [`Routes::update`](super::Routes::update): whole specs of the apps and certificates it added or
/// changed, and the ids of those it removed. Removals apply first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableUpdate {
    /// The revision the new table carries; must exceed the published one.
    pub revision: u64,
    /// New and changed apps, whole (an app's id says which one it replaces).
    pub apps: Vec<AppSpec>,
    /// Ids of apps that left the table.
    pub removed_apps: Vec<String>,
    /// New and changed certificates, whole (by [`CertSpec::id`]).
    pub certs: Vec<CertSpec>,
    /// Ids of certificates that left the table.
    pub removed_certs: Vec<String>,
}

impl RouteTable {
    /// The table `update` makes of this one: the apps it names are taken
    /// out, then its apps are put in (inheriting live state by id), and its
    /// certificates likewise. O(changed apps); this table is untouched, and
    /// on error nothing is returned.
    pub fn updated(&self, update: TableUpdate) -> Result<RouteTable, TableError> {
        let mut next = self.clone();
        next.revision = update.revision;
        // Out first, in second: a domain or a name may move between two
        // apps of the same change.
        let mut old: HashMap<Arc<str>, Arc<App>> = HashMap::new();
        let ids = update.removed_apps.iter().map(String::as_str);
        for id in ids.chain(update.apps.iter().map(|a| a.id.as_str())) {
            if let Some(entry) = next.remove_app(id) {
                old.insert(entry.app.id.clone(), entry.app);
            }
        }
        for spec in update.apps {
            let previous = old.get(spec.id.as_str()).cloned();
            next.insert_app(spec, previous.as_deref())?;
        }
        if !update.certs.is_empty() || !update.removed_certs.is_empty() {
            next.certs = self.certs.updated(&update.removed_certs, &update.certs);
        }
        Ok(next)
    }

    /// Takes the app with id `id` and its host keys out of the indexes.
    fn remove_app(&mut self, id: &str) -> Option<Entry> {
        let entry = self.by_id.get(id)?.clone();
        self.by_id.remove_mut(id);
        self.by_name.remove_mut(&*entry.app.name);
        for key in entry.exact.iter() {
            self.exact.remove_mut(&**key);
        }
        for key in entry.wildcard.iter() {
            self.wildcard.remove_mut(&**key);
        }
        Some(entry)
    }

    /// Puts the app of `spec` into the indexes, taking its live state (and
    /// its dynos', by name and address) from `old`. Refuses a name, id or
    /// domain another app of the table holds, leaving `self` half-changed:
    /// callers work on a copy.
    fn insert_app(&mut self, spec: AppSpec, old: Option<&App>) -> Result<(), TableError> {
        let name: Arc<str> = spec.name.to_ascii_lowercase().into();
        if self.by_name.contains_key(&*name) {
            return Err(TableError::DuplicateApp(spec.name));
        }
        if self.by_id.contains_key(spec.id.as_str()) {
            return Err(TableError::DuplicateAppId(spec.id));
        }
        let mut exact: Vec<Arc<str>> = Vec::new();
        let mut wildcard: Vec<Arc<str>> = Vec::new();
        for domain in &spec.domains {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            let (map, keys, key) = match domain.strip_prefix("*.") {
                Some(parent) => (&self.wildcard, &mut wildcard, parent),
                None => (&self.exact, &mut exact, domain.as_str()),
            };
            if key.is_empty() || key.contains('*') || key.contains(':') {
                return Err(TableError::InvalidDomain(domain));
            }
            if let Some(first) = map.get(key) {
                return Err(TableError::DuplicateDomain {
                    first: first.name.to_string(),
                    second: spec.name.clone(),
                    domain,
                });
            }
            if !keys.iter().any(|k| **k == *key) {
                keys.push(key.into());
            }
        }
        let mut web: Vec<Dyno> = spec
            .dynos
            .iter()
            .filter(|d| d.name.split('.').next() == Some("web"))
            .map(|d| {
                let live = old
                    .and_then(|o| {
                        o.web
                            .iter()
                            .find(|od| *od.name == *d.name && od.address == d.address)
                    })
                    .map(|od| od.live.clone())
                    .unwrap_or_default();
                Dyno {
                    name: d.name.as_str().into(),
                    address: d.address,
                    state: d.state,
                    live,
                }
            })
            .collect();
        web.sort_by(|a, b| dyno_order(&a.name, &b.name));
        let app = Arc::new(App {
            id: spec.id.into(),
            name: name.clone(),
            settings: spec.settings,
            web: web.into_boxed_slice(),
            live: old.map(|o| o.live.clone()).unwrap_or_default(),
            log_token: spec.log_token,
            acme_challenges: spec
                .acme_challenges
                .into_iter()
                .map(|(t, a)| (t.into_boxed_str(), a.into_boxed_str()))
                .collect(),
        });
        self.by_name.insert_mut(name, app.clone());
        for key in &exact {
            self.exact.insert_mut(key.clone(), app.clone());
        }
        for key in &wildcard {
            self.wildcard.insert_mut(key.clone(), app.clone());
        }
        let entry = Entry {
            app: app.clone(),
            exact: exact.into(),
            wildcard: wildcard.into(),
        };
        self.by_id.insert_mut(app.id.clone(), entry);
        Ok(())
    }
}

/// Builds a [`RouteTable`], reusing live state from a previous table.
#[derive(Debug)]
pub struct RouteTableBuilder {
    pub(super) revision: u64,
    pub(super) base_domain: String,
    pub(super) apps: Vec<AppSpec>,
    pub(super) certs: Vec<CertSpec>,
}

impl RouteTableBuilder {
    /// Sets the revision.
    pub fn revision(mut self, revision: u64) -> Self {
        self.revision = revision;
        self
    }

    /// Sets the base domain (`<app>.<base>` always routes to the app).
    pub fn base_domain(mut self, base: impl Into<String>) -> Self {
        self.base_domain = base.into();
        self
    }

    /// Adds an app.
    pub fn app(mut self, app: AppSpec) -> Self {
        self.apps.push(app);
        self
    }

    /// Adds many apps.
    pub fn apps(mut self, apps: impl IntoIterator<Item = AppSpec>) -> Self {
        self.apps.extend(apps);
        self
    }

    /// Adds a TLS certificate (an SNI endpoint).
    pub fn cert(mut self, cert: CertSpec) -> Self {
        self.certs.push(cert);
        self
    }

    /// Adds many certificates.
    pub fn certs(mut self, certs: impl IntoIterator<Item = CertSpec>) -> Self {
        self.certs.extend(certs);
        self
    }

    /// Builds a fresh table (all live counters start at zero).
    pub fn build(self) -> Result<RouteTable, TableError> {
        self.build_from(None)
    }

    /// Builds a table that inherits live state from `previous` (by app
    /// id, and by dyno name and address).
    pub fn build_from(self, previous: Option<&RouteTable>) -> Result<RouteTable, TableError> {
        let mut table = RouteTable {
            revision: self.revision,
            base_domain: self
                .base_domain
                .trim_matches('.')
                .to_ascii_lowercase()
                .into(),
            certs: match previous {
                Some(p) => Certs::rebuilt(p.certs(), &self.certs),
                None => Certs::build(&self.certs),
            },
            ..RouteTable::default()
        };
        for spec in self.apps {
            let old = previous.and_then(|p| p.app_by_id(&spec.id)).cloned();
            table.insert_app(spec, old.as_deref())?;
        }
        Ok(table)
    }
}

/// Orders `web.2` before `web.10`.
fn dyno_order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> (String, u64) {
        match s.rsplit_once('.') {
            Some((t, n)) => (t.to_string(), n.parse().unwrap_or(u64::MAX)),
            None => (s.to_string(), u64::MAX),
        }
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}
