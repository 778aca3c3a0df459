//! The `registry_edge_policy_usage_bytes` and `_quota_bytes` gauges.

use std::sync::Arc;

use super::usage::Policy;
use crate::config::PolicySettings;
use crate::metrics::metrics;

/// Publishes every namespace's usage and quota (`registry_edge_policy_*` gauges) at start
/// and every [`GAUGES_EVERY`]: with Redis, other instances' pushes show up too.
pub(crate) struct UsageGauges {
    pub policy: Arc<Policy>,
    pub settings: crate::settings::SharedSettings,
}

/// How often [`UsageGauges`] reads all usage.
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for UsageGauges {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut every = tokio::time::interval(GAUGES_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            let settings = self.settings.load();
            let Some(rules) = settings.policy.as_ref() else {
                continue;
            };
            match self.policy.all().await {
                Ok(all) => {
                    for (namespace, usage) in all {
                        set_gauges(&namespace, usage, rules);
                    }
                }
                Err(e) => tracing::warn!(
                    "policy: usage cannot be read for the metrics: {}",
                    crate::report::chain(&e)
                ),
            }
            for namespace in rules.quotas.namespaces.keys() {
                set_gauges(
                    namespace,
                    self.policy.usage(namespace).await.unwrap_or(0),
                    rules,
                );
            }
        }
    }
}

/// Sets the usage and (when it has one) quota gauges of `namespace`.
pub(crate) fn set_gauges(namespace: &str, usage: u64, rules: &PolicySettings) {
    let m = metrics();
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.policy_usage
        .with_label_values(&[namespace])
        .set(clamp(usage));
    if let Some(quota) = rules.quotas.of(namespace) {
        m.policy_quota
            .with_label_values(&[namespace])
            .set(clamp(quota));
    }
}
