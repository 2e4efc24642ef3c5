//! The channel configuration the control plane publishes to logplex.

/// A named input token: senders put it in APP-NAME (syslog) or the Basic
/// auth password (HTTP); logplex routes by it and writes `name` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// `t.<uuid>`.
    pub token: String,
    /// What replaces the token on output (`app`, `heroku`, …).
    pub name: String,
}

/// One drain of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainSpec {
    /// Stable id (UUID) of the drain.
    pub id: String,
    /// `d.<uuid>`: sent as the syslog HOSTNAME / `Logplex-Drain-Token`.
    pub token: String,
    /// `syslog://host:port`, `syslog+tls://host:port[#insecure]` or `https://…`.
    pub url: String,
}

/// One app's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The app's id (UUID); router and control emit by it.
    pub app_id: String,
    /// The app's current name.
    pub app_name: String,
    /// Input tokens.
    pub tokens: Vec<TokenSpec>,
    /// Drains.
    pub drains: Vec<DrainSpec>,
}

/// The whole published logplex configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogplexConfig {
    /// Control-plane revision this was built from.
    pub revision: u64,
    /// Every channel.
    pub channels: Vec<ChannelSpec>,
}
