//! `[metrics]`: where Prometheus scrapes `/metrics`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Invalid;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// A second listener serving only `GET /metrics` (e.g. `0.0.0.0:9090`); `/metrics` then
    /// leaves the public listener (`404` there). Unset: `/metrics` is served on `server.listen`.
    /// The route's access (`auth.ops`) is the same on either.
    pub listen: Option<SocketAddr>,
}

impl MetricsSettings {
    /// `server_listen`: the public listener, which this one must not collide with.
    pub fn validate(&self, server_listen: SocketAddr) -> Result<(), Invalid> {
        let Some(listen) = self.listen else {
            return Ok(());
        };
        let overlaps = listen.ip() == server_listen.ip()
            || listen.ip().is_unspecified()
            || server_listen.ip().is_unspecified();
        if listen.port() != 0 && listen.port() == server_listen.port() && overlaps {
            return Err(Invalid::new(
                "metrics.listen",
                format!("must not be server.listen's address ({server_listen}): a second port"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(listen: &str) -> MetricsSettings {
        MetricsSettings {
            listen: Some(listen.parse().unwrap()),
        }
    }

    #[test]
    fn a_second_port_is_required() {
        let server = "0.0.0.0:8080".parse().unwrap();
        assert!(MetricsSettings::default().validate(server).is_ok());
        assert!(with("0.0.0.0:9090").validate(server).is_ok());
        assert!(
            with("127.0.0.1:0")
                .validate("127.0.0.1:0".parse().unwrap())
                .is_ok()
        );
        for clash in ["0.0.0.0:8080", "127.0.0.1:8080"] {
            let e = with(clash).validate(server).unwrap_err();
            assert_eq!(e.key, "metrics.listen", "{clash}");
        }
        // Two addresses of one host may share a port.
        assert!(
            with("10.0.0.1:8080")
                .validate("127.0.0.1:8080".parse().unwrap())
                .is_ok()
        );
    }
}
