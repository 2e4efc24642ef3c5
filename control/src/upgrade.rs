//! Bringing a store written by an earlier version up to date, when a
//! control node opens it.
//!
//! Each step is idempotent and safe to run on several control nodes at
//! once: it writes only what is missing, through [`Control::change`], so
//! a node that loses the race to another runs again on the fresh state and
//! finds nothing left to write.

use std::sync::Arc;

use crate::engine::Control;
use crate::error::ApiError;
use crate::model::{key, now, uuid, AppRecord, TokenRecord};
use crate::publish::PLATFORM_TOKEN;

/// Apps given a token per commit: each costs two writes (the token and the
/// app's route entry), and etcd caps a transaction at 128 operations
/// unless started with a higher `--max-txn-ops`.
const APPS_PER_COMMIT: usize = 50;

/// Whether the app with id `app` has an input token named `heroku`.
fn has_platform_token(tokens: &[TokenRecord]) -> bool {
    tokens.iter().any(|t| t.name == PLATFORM_TOKEN)
}

impl Control {
    /// Gives every app without one an input token named `heroku` (apps
    /// created before routers shipped their lines have only `app`), so
    /// that routers running apart can write `heroku[router]` lines into
    /// its stream. One commit per [`APPS_PER_COMMIT`] apps, none when no
    /// app lacks it. Returns how many apps got one.
    pub async fn add_platform_tokens(self: &Arc<Self>) -> Result<usize, ApiError> {
        let missing: Vec<String> = {
            let state = self.read();
            state
                .list::<AppRecord>("apps/")
                .into_iter()
                .filter(|app| !has_platform_token(&state.list(&key::under("tokens", &app.id))))
                .map(|app| app.id)
                .collect()
        };
        let mut added = 0;
        for chunk in missing.chunks(APPS_PER_COMMIT) {
            added += self
                .change(|txn| {
                    let mut n = 0;
                    for id in chunk {
                        // Gone, or given one by another node since.
                        if txn.get::<AppRecord>(&key::app(id)).is_none()
                            || has_platform_token(&txn.list(&key::under("tokens", id)))
                        {
                            continue;
                        }
                        let token = TokenRecord {
                            token: format!("t.{}", uuid()),
                            name: PLATFORM_TOKEN.into(),
                            created_at: now(),
                        };
                        txn.put(key::token(id, &token.token), &token);
                        n += 1;
                    }
                    Ok(n)
                })
                .await?;
        }
        Ok(added)
    }
}
