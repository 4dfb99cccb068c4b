//! Live config reload: the config file is re-read when its content changes (checked every second, which
//! also sees Kubernetes' ConfigMap symlink swap) or on SIGHUP. A valid file replaces the config
//! atomically; an invalid one is logged and the config in force stays. Cluster state (health, drain,
//! load) and learned query owners survive, since they are kept by cluster name.
//!
//! Why polling rather than a file-notification crate: the file is small, a read per second costs
//! nothing, and a read follows every kind of replacement (rename, symlink swap, in-place write,
//! network file systems) where notifications differ by platform and by how the file was replaced.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::domain::config::{Config, Overrides};
use crate::state::router::Router;

/// How often the file is compared with what was last loaded.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Watches the config file and SIGHUP, forever.
pub async fn watch(router: Arc<Router>, path: PathBuf, overrides: Overrides) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); reloading on file changes only");
            None
        }
    };
    let mut last = tokio::fs::read(&path).await.ok();
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            _ = ticks.tick() => false,
        };
        let current = tokio::fs::read(&path).await.ok();
        if !forced && current == last {
            continue;
        }
        last = current;
        reload(&router, &path, &overrides, if forced { "SIGHUP" } else { "file changed" });
    }
}

/// Loads the file and swaps it in, or logs why not. Returns whether the new config is in force.
pub fn reload(router: &Router, path: &std::path::Path, overrides: &Overrides, why: &str) -> bool {
    match Config::load(path, overrides) {
        Ok(mut config) => {
            let running = router.snapshot();
            if config.listen != running.config.listen {
                tracing::warn!(
                    from = %running.config.listen,
                    to = %config.listen,
                    "a new listen address takes effect only after a restart"
                );
                config.listen = running.config.listen;
            }
            if config.listen_tls != running.config.listen_tls {
                tracing::warn!("new listen_tls files take effect only after a restart");
                config.listen_tls = running.config.listen_tls.clone();
            }
            let clusters = config.clusters.len();
            let groups = config.groups.len();
            router.apply(config);
            tracing::info!(why, clusters, groups, "config reloaded");
            crate::state::metrics::METRICS.reloaded(true);
            true
        }
        Err(e) => {
            let problems = e.to_string().replace('\n', "; ");
            tracing::error!(why, "config reload rejected, the previous config stays in force: {problems}");
            crate::state::metrics::METRICS.reloaded(false);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::cluster_state::Operator;

    const BEFORE: &str = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: b, url: 'http://127.0.0.1:2', group: adhoc}
";

    #[test]
    fn valid_files_swap_in_and_invalid_ones_change_nothing() {
        let dir = std::env::temp_dir().join(format!("trino-router-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("router.yaml");
        std::fs::write(&path, BEFORE).unwrap();
        let overrides = Overrides::default();
        let router = Router::new(Config::load(&path, &overrides).unwrap());
        router.set_operator("b", Operator::Draining, "");

        std::fs::write(&path, BEFORE.replace("group: adhoc}\n  - {name: b", "group: etl}\n  - {name: b"))
            .unwrap();
        assert!(reload(&router, &path, &overrides, "test"));
        let snapshot = router.snapshot();
        assert_eq!(&*snapshot.config.clusters[0].group, "etl");
        assert_eq!(snapshot.clusters[1].operator(), Operator::Draining, "state survives");

        std::fs::write(&path, "listen: [broken").unwrap();
        assert!(!reload(&router, &path, &overrides, "test"));
        assert_eq!(&*router.snapshot().config.clusters[0].group, "etl", "the old config stays");

        std::fs::write(&path, BEFORE.replace("127.0.0.1:1\n", "127.0.0.1:9\n")).unwrap();
        assert!(reload(&router, &path, &overrides, "test"));
        assert_eq!(router.snapshot().config.listen.port(), 1, "listen changes wait for a restart");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
