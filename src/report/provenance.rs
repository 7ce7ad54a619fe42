//! The provenance every report carries: which rvpt, when, from what command, on what.

/// Where a report comes from: which rvpt (version, and the git commit it was built from:
/// `-dirty` with uncommitted changes, `unknown` outside a checkout), when (UTC, RFC 3339), the
/// command line and, for what ran a model, the device, the dtype and the weights.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub rvpt_version: String,
    pub rvpt_commit: String,
    pub date: String,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<crate::engine::WeightsUsed>,
}

impl Provenance {
    /// This rvpt, now, this command line.
    pub fn now() -> Self {
        Self {
            rvpt_version: env!("CARGO_PKG_VERSION").into(),
            rvpt_commit: env!("RVPT_COMMIT").into(),
            date: String::new(),
            command: std::env::args().collect(),
            device: None,
            dtype: None,
            weights: None,
        }
        .stamped()
    }

    /// The date set to now (a report rewritten later says when).
    pub fn stamped(mut self) -> Self {
        self.date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self
    }

    pub fn ran_on(mut self, device: &str, dtype: &str) -> Self {
        self.device = Some(device.into());
        self.dtype = Some(dtype.into());
        self
    }

    pub fn with_weights(mut self, weights: crate::engine::WeightsUsed) -> Self {
        self.weights = Some(weights);
        self
    }

    /// What ran `engine`: its device, dtype and weights.
    pub fn of_engine(engine: &crate::engine::Engine) -> Self {
        Self::now()
            .ran_on(
                &crate::device::device_name(&engine.device),
                engine.dtype.as_str(),
            )
            .with_weights(engine.weights_used())
    }
}
